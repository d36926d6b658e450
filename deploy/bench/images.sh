#!/usr/bin/env bash
# Image benchmarks (issue 5):
#  - cold build and cached rebuild of examples/images/app (FROM busybox, COPY, RUN),
#  - pull of a 3-layer image (3 x 32 MiB of random data, gzip-incompressible, stored
#    uncompressed) from Debian's docker-registry on 127.0.0.1, in MB/s,
#  - the same with `docker build` / `docker pull` where a Docker daemon is running.
# Usage: deploy/bench/images.sh   (as root; needs docker-registry; builds the release binary)
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/bench/lib.sh
cargo build --release --quiet
B=${CARGO_TARGET_DIR:-$PWD/target}/release/skiff
work=$(mktemp -d /tmp/skimg.XXXX)
H=unix://$work/s.sock
agent_pid=
reg_pid=
cleanup() {
  for id in $($B -H "$H" ps -aq 2>/dev/null); do $B -H "$H" rm -f "$id" >/dev/null 2>&1 || true; done
  [ -n "$agent_pid" ] && kill -9 "$agent_pid" 2>/dev/null || true
  cleanup_agent_network "$work/root"
  cleanup_agent_network "$work/root2"
  [ -n "$reg_pid" ] && kill -9 "$reg_pid" 2>/dev/null || true
  grep " $work" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
$B agent --root "$work/root" --exec-root "$work/run" --host "$H" >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do $B -H "$H" version >/dev/null 2>&1 && break; sleep 0.1; done
examples/images/busybox/build.sh "$work/bb.tar" >/dev/null
$B -H "$H" image import -c 'CMD ["sh"]' "$work/bb.tar" busybox:latest >/dev/null
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }

cold=$(ms $B -H "$H" build --no-cache -t app:bench examples/images/app)
cached=$(ms $B -H "$H" build -t app:bench examples/images/app)
echo "build examples/images/app: cold ${cold} ms, cached rebuild ${cached} ms"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/reg.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/reg}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/reg.yml" >"$work/reg.log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
mkdir -p "$work/big"
printf 'FROM busybox\nRUN head -c 33554432 /dev/urandom > /l1\nRUN head -c 33554432 /dev/urandom > /l2\nRUN head -c 33554432 /dev/urandom > /l3\n' >"$work/big/Dockerfile"
img=127.0.0.1:$port/bench/big:1
$B -H "$H" build -q -t "$img" "$work/big" >/dev/null
$B -H "$H" push -q "$img" >/dev/null
bytes=$(du -sb "$work/reg/docker/registry/v2/blobs" | cut -f1)
# Pull into a second, empty agent (the first keeps the layers as build cache).
H2=unix://$work/s2.sock
$B agent --root "$work/root2" --exec-root "$work/run2" --host "$H2" >"$work/agent2.log" 2>&1 &
agent2_pid=$!
for _ in $(seq 100); do $B -H "$H2" version >/dev/null 2>&1 && break; sleep 0.1; done
pull=$(ms $B -H "$H2" pull -q "$img")
kill -9 "$agent2_pid"
echo "pull $img: $bytes bytes in ${pull} ms = $(( bytes / 1000 / pull )) MB/s (including unpack)"
if docker info >/dev/null 2>&1; then
  # The same offline base image on Docker's side; builds without a network, like ours.
  docker import -c 'CMD ["sh"]' "$work/bb.tar" busybox:latest >/dev/null
  dcold=$(ms docker build --network none --no-cache -t app:bench examples/images/app)
  dcached=$(ms docker build --network none -t app:bench examples/images/app)
  echo "docker build: cold ${dcold} ms, cached ${dcached} ms"
  dpull=$(ms docker pull "$img")
  echo "docker pull: ${dpull} ms"
else
  echo "docker: no running daemon on this machine; no comparison"
fi
