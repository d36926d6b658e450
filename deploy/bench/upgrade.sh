#!/usr/bin/env bash
# How long an agent upgrade takes the API away, with containers running (issue 10):
# N containers, then R times: the agent gets SIGTERM (what `systemctl restart skiff`
# sends with KillMode=process), fresh copies of the binaries (skiff and skiff-shim) are
# renamed over their paths (as deploy/install.sh does), and the agent starts again. Reported, median over R:
#  - stop: SIGTERM until the old agent has exited,
#  - gap: SIGTERM until `skiff ps` lists all N containers running again,
# and checked every round: no container changed its PID (none was restarted).
# Usage: deploy/bench/upgrade.sh [N] [R]   (as root; builds the release binaries)
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/bench/lib.sh
N=${1:-10}
R=${2:-10}
cargo build --release --quiet --bin skiff --bin skiff-shim
B=${CARGO_TARGET_DIR:-$PWD/target}/release/skiff
S=$(dirname "$B")/skiff-shim
work=$(mktemp -d /tmp/skbench.XXXX)
H=unix://$work/s.sock
exe=$work/bin/skiff
shim=$work/bin/skiff-shim
agent_pid=
cleanup() {
  for id in $($B -H "$H" ps -aq 2>/dev/null); do $B -H "$H" rm -f "$id" >/dev/null 2>&1 || true; done
  if [ -n "$agent_pid" ]; then { kill -9 "$agent_pid" && wait "$agent_pid"; } 2>/dev/null || true; fi
  cleanup_agent_network "$work/root"
  grep " $work" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/bin"
install -m 0755 "$S" "$shim"
install -m 0755 "$B" "$exe"
start_agent() {
  "$exe" agent --root "$work/root" --exec-root "$work/run" --host "$H" >>"$work/agent.log" 2>&1 &
  agent_pid=$!
}
start_agent
for _ in $(seq 100); do $B -H "$H" version >/dev/null 2>&1 && break; sleep 0.1; done
examples/images/busybox/build.sh "$work/bb.tar" >/dev/null
$B -H "$H" image import "$work/bb.tar" busybox:latest >/dev/null
for i in $(seq "$N"); do $B -H "$H" run -d --name "c$i" busybox sleep 3600 >/dev/null; done
pids() { $B -H "$H" ps -q --no-trunc | xargs $B -H "$H" inspect -f '{{.Name}} {{.State.Pid}}' | sort; }
before=$(pids)

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
stops=() gaps=()
for _ in $(seq "$R"); do
  install -m 0755 "$S" "$shim.new"
  install -m 0755 "$B" "$exe.new"
  t0=$(now_ms)
  kill -TERM "$agent_pid"
  wait "$agent_pid" 2>/dev/null || true
  t1=$(now_ms)
  mv -f "$shim.new" "$shim"
  mv -f "$exe.new" "$exe"
  start_agent
  until [ "$($B -H "$H" ps -q 2>/dev/null | wc -l)" = "$N" ]; do sleep 0.01; done
  t2=$(now_ms)
  stops+=($((t1 - t0)))
  gaps+=($((t2 - t0)))
  [ "$(pids)" = "$before" ] || { echo "a container changed PID across the upgrade" >&2; exit 1; }
done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
echo "containers running: $N, upgrades: $R, every container kept its PID"
echo "stop (SIGTERM to exit), median: $(printf '%s\n' "${stops[@]}" | median) ms"
echo "gap (SIGTERM to all $N listed running again), median: $(printf '%s\n' "${gaps[@]}" | median) ms"
echo "gap, max: $(printf '%s\n' "${gaps[@]}" | sort -n | tail -1) ms"
