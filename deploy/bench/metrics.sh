#!/usr/bin/env bash
# Scrape cost of the agent's Prometheus endpoint (issue 10): an agent with
# --metrics-addr on loopback runs N idle containers (default bridge network); then
# M scrapes of /metrics: median wall time (curl), body size, and the agent's CPU time
# per scrape (from /proc/PID/stat before and after). Also the idle agent's CPU over the
# same period without scrapes, to show nothing samples in the background.
# Usage: deploy/bench/metrics.sh [N containers] [M scrapes]   (as root; release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/bench/lib.sh
N=${1:-50}
M=${2:-50}
cargo build --release --quiet --bin skiff --bin skiff-shim
B=${CARGO_TARGET_DIR:-$PWD/target}/release/skiff
work=$(mktemp -d /tmp/skbench.XXXX)
H=unix://$work/s.sock
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
agent_pid=
cleanup() {
  for id in $($B -H "$H" ps -aq 2>/dev/null); do $B -H "$H" rm -f "$id" >/dev/null 2>&1 || true; done
  [ -n "$agent_pid" ] && kill -9 "$agent_pid" 2>/dev/null || true
  cleanup_agent_network "$work/root"
  grep " $work" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
$B agent --root "$work/root" --exec-root "$work/run" --host "$H" \
  --metrics-addr "127.0.0.1:$port" >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do $B -H "$H" version >/dev/null 2>&1 && break; sleep 0.1; done
examples/images/busybox/build.sh "$work/bb.tar" >/dev/null
$B -H "$H" image import "$work/bb.tar" busybox:latest >/dev/null
for i in $(seq "$N"); do $B -H "$H" run -d --name "idle$i" busybox sleep 3600 >/dev/null; done

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$agent_pid/stat"; }
hz=$(getconf CLK_TCK)
url=http://127.0.0.1:$port/metrics

# The idle agent first: the same wall time as the scrapes will take, no scrapes.
for _ in 1 2 3; do curl -fsS "$url" >/dev/null; done
t0=$(date +%s%N); for _ in $(seq "$M"); do curl -fsS "$url" >/dev/null; done; t1=$(date +%s%N)
span_ms=$(( (t1 - t0) / 1000000 ))
c0=$(cpu_ticks); sleep "$(awk -v ms="$span_ms" 'BEGIN {printf "%.3f", ms / 1000}')"; c1=$(cpu_ticks)
idle_ms=$(( (c1 - c0) * 1000 / hz ))

c0=$(cpu_ticks)
wall=$(for _ in $(seq "$M"); do curl -fsS -o /dev/null -w '%{time_total}\n' "$url"; done |
  awk '{print $1 * 1000}' | median)
c1=$(cpu_ticks)
cpu_per=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v m="$M" 'BEGIN {printf "%.2f", t * 1000 / hz / m}')
body=$(curl -fsS "$url")
bytes=$(printf %s "$body" | wc -c)
series=$(printf %s "$body" | grep -vc '^#')

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
echo "containers running: $N, scrapes: $M"
echo "scrape wall time (median, curl): ${wall} ms"
echo "agent CPU per scrape: ${cpu_per} ms"
echo "agent CPU while idle for the same ${span_ms} ms without scrapes: ${idle_ms} ms"
echo "body: ${bytes} bytes, ${series} samples"
