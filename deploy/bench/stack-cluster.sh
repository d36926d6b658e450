#!/usr/bin/env bash
# Stack deploy at cluster scale (issue 7): time from `stack deploy` to all N replicas
# running, spread over W netns workers (deploy/netns-cluster: one manager that runs no
# replica, W workers), then the time for `stack rm` to leave no container behind.
# Prints where the replicas landed and the agents' RSS afterwards.
#   deploy/bench/stack-cluster.sh [REPLICAS] [WORKERS]   (root; default 300 over 3)
#   SKIFF=target/release/skiff to use a prebuilt binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/bench/lib.sh
N=${1:-300}
W=${2:-3}
if [ -z "${SKIFF:-}" ]; then
  cargo build --release --quiet --bin skiff --bin skiff-shim
  SKIFF=${CARGO_TARGET_DIR:-$PWD/target}/release/skiff
fi
B=$SKIFF
D=${DIR:-$(mktemp -d /tmp/skscaleXXXX)}
rmdir "$D" 2>/dev/null || true
cleanup() { deploy/netns-cluster down --dir "$D" --bin "$B" >/dev/null 2>&1 || true; }
[ -n "${KEEP:-}" ] || trap cleanup EXIT
deploy/netns-cluster up --managers 1 --workers "$W" --dir "$D" --bin "$B" >/dev/null
sk() { local h=$1; shift; "$B" -H "unix://$D/$h/s.sock" "$@"; }
bash examples/images/busybox/build.sh "$D.bb.tar" >/dev/null
hosts=$(awk '{print $1}' "$D/hosts")
for h in $hosts; do sk "$h" image import "$D.bb.tar" busybox:latest >/dev/null; done
rm -f "$D.bb.tar"
bench_stack_yaml "$N" workers >"$D/app.yaml"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
s=$(date +%s%N)
sk manager1 stack deploy -c "$D/app.yaml" --detach=false --timeout 5m scale >/dev/null
e=$(date +%s%N)
echo "stack deploy of $N replicas over $W workers to all running: $(( (e - s) / 1000000 )) ms"
for h in $hosts; do
  n=$(sk "$h" ps -q | wc -l)
  rss=$(ps -o rss= -p "$(cat "$D/$h/agent.pid")" | awk '{printf "%.0f MiB", $1/1024}')
  echo "  $h: $n containers running, agent RSS $rss"
done
s=$(date +%s%N)
sk manager1 stack rm scale >/dev/null
for h in $hosts; do
  while [ "$(sk "$h" ps -aq | wc -l)" -gt 0 ]; do sleep 0.2; done
done
e=$(date +%s%N)
echo "stack rm to no container left on any host: $(( (e - s) / 1000000 )) ms"
