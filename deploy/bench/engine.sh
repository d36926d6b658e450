#!/usr/bin/env bash
# Whole-system benchmark for the single-host engine (issue 2):
#  - `skiff run --rm busybox true`, median wall time over N runs,
#  - side by side, in the same run, `runc run` on a prepared bundle of the same rootfs,
#  - `docker run --rm busybox true` where a Docker daemon is running,
#  - agent RSS and per-container shim RSS with 10 containers running.
# Usage: deploy/bench/engine.sh [N]   (as root; builds the release binary)
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/bench/lib.sh
N=${1:-30}
cargo build --release --quiet
B=${CARGO_TARGET_DIR:-$PWD/target}/release/skiff
work=$(mktemp -d /tmp/skbench.XXXX)
H=unix://$work/s.sock
agent_pid=
cleanup() {
  for id in $($B -H "$H" ps -aq 2>/dev/null); do $B -H "$H" rm -f "$id" >/dev/null 2>&1 || true; done
  [ -n "$agent_pid" ] && kill -9 "$agent_pid" 2>/dev/null || true
  cleanup_agent_network "$work/root"
  runc delete -f skbench >/dev/null 2>&1 || true
  grep " $work" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
$B agent --root "$work/root" --exec-root "$work/run" --host "$H" >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do $B -H "$H" version >/dev/null 2>&1 && break; sleep 0.1; done
examples/images/busybox/build.sh "$work/bb.tar" >/dev/null
$B -H "$H" image import "$work/bb.tar" busybox:latest >/dev/null

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
time_ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }

# Warm up page cache and the agent.
for _ in 1 2 3; do $B -H "$H" run --rm busybox true >/dev/null; done
skiff_ms=$(for _ in $(seq "$N"); do time_ms $B -H "$H" run --rm busybox true; done | median)

# runc on a prepared bundle of the same rootfs.
mkdir -p "$work/bundle/rootfs"
tar -C "$work/bundle/rootfs" -xf "$work/bb.tar"
(cd "$work/bundle" && runc spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"true"/' config.json)
for _ in 1 2 3; do runc run -b "$work/bundle" skbench >/dev/null 2>&1 || true; done
runc_ms=$(for _ in $(seq "$N"); do time_ms runc run -b "$work/bundle" skbench; done | median)

docker_ms=n/a
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  # The same offline base image on Docker's side.
  docker image inspect busybox >/dev/null 2>&1 || docker import "$work/bb.tar" busybox:latest >/dev/null
  for _ in 1 2 3; do docker run --rm --network none busybox true >/dev/null 2>&1 || true; done
  docker_ms=$(for _ in $(seq "$N"); do time_ms docker run --rm --network none busybox true; done | median)
fi

# Memory: agent and shims with 10 idle containers.
for i in $(seq 10); do $B -H "$H" run -d --name "idle$i" busybox sleep 600 >/dev/null; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
agent_rss=$(rss "$agent_pid")
shim_rss=$(for p in $(pgrep -f "skiff shim --task $work"); do rss "$p"; done | median)

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
echo "runs per figure: $N (median wall time)"
echo "skiff run --rm busybox true: ${skiff_ms} ms"
echo "runc run (prepared bundle):  ${runc_ms} ms   ratio skiff/runc: $(awk -v a="$skiff_ms" -v b="$runc_ms" 'BEGIN {printf "%.2f", a/b}')"
echo "docker run --rm --network none busybox true: ${docker_ms} ms   ratio docker/skiff: $(awk -v a="$docker_ms" -v b="$skiff_ms" 'BEGIN {if (a+0 > 0) printf "%.1f", a/b; else print "n/a"}')"
echo "agent RSS with 10 containers: $((agent_rss / 1024)) MiB"
echo "shim RSS (median of 10): $(awk -v k="$shim_rss" 'BEGIN {printf "%.1f", k/1024}') MiB"
