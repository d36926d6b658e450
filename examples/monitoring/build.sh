#!/bin/sh
# Builds the Prometheus image for examples/monitoring with `skiff build`:
#   examples/monitoring/build.sh [TAG]        (default skiff-prometheus:latest)
# Needs Debian's prometheus package on the building host (apt-get install
# --no-install-recommends prometheus) and the busybox:latest image
# (examples/images/busybox/README.md). SKIFF overrides the skiff command.
set -eu
tag=${1:-skiff-prometheus:latest}
skiff=${SKIFF:-skiff}
here=$(cd "$(dirname "$0")" && pwd)
bin=$(command -v prometheus) || {
  echo "prometheus not found: apt-get install --no-install-recommends prometheus" >&2
  exit 1
}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/bin"
cp "$bin" "$ctx/rootfs/bin/prometheus"
# Debian's binary links against glibc and the busybox image has none: copy what the
# dynamic loader needs, at the paths ldd reports.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
  while read -r lib; do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
  done
cp "$here/Dockerfile" "$ctx/Dockerfile"
exec $skiff build -t "$tag" "$ctx"
