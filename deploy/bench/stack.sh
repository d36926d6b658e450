#!/usr/bin/env bash
# Whole-system benchmark for stacks (issue 7): time from `stack deploy` to all
# replicas running, for N replicas of busybox on one node, side by side in the same
# run with Docker Swarm (`docker swarm init` + `docker stack deploy` of the same file)
# where Debian's docker.io is installed: one untimed warm-up deploy on each side, then
# RUNS runs (default 3), each deploying from nothing on both sides, then the range of
# the ratio.
# Usage: deploy/bench/stack.sh [REPLICAS] [RUNS]   (as root; builds the release binary
# unless SKIFF=path/to/skiff is given)
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/bench/lib.sh
N=${1:-30}
RUNS=${2:-3}
if [ -z "${SKIFF:-}" ]; then
  cargo build --release --quiet --bin skiff --bin skiff-shim
  SKIFF=${CARGO_TARGET_DIR:-$PWD/target}/release/skiff
fi
B=$SKIFF
work=$(mktemp -d /tmp/skbench.XXXX)
H=unix://$work/s.sock
agent_pid= dockerd_pid=
cleanup() {
  $B -H "$H" stack rm bench >/dev/null 2>&1 || true
  sleep 2
  for id in $($B -H "$H" ps -aq 2>/dev/null); do $B -H "$H" rm -f "$id" >/dev/null 2>&1 || true; done
  [ -n "$agent_pid" ] && kill -9 "$agent_pid" 2>/dev/null || true
  cleanup_agent_network "$work/root"
  if [ -n "$dockerd_pid" ]; then
    $D stack rm bench >/dev/null 2>&1 || true
    $D swarm leave --force >/dev/null 2>&1 || true
    kill "$dockerd_pid" 2>/dev/null || true
    sleep 3
    iptables -P FORWARD ACCEPT 2>/dev/null || true
    ip link del docker_gwbridge 2>/dev/null || true
    ip link del skbench0 2>/dev/null || true
  fi
  grep " $work" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
bench_stack_yaml "$N" >"$work/app.yaml"
# No Docker API socket: its default path (docker.sock beside s.sock) is where the private
# dockerd listens.
bench_exec_root "$work/run"
$B agent --root "$work/root" --exec-root "$work/run" --host "$H" --docker-socket "" >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do $B -H "$H" version >/dev/null 2>&1 && break; sleep 0.1; done
examples/images/busybox/build.sh "$work/bb.tar" >/dev/null
$B -H "$H" image import "$work/bb.tar" busybox:latest >/dev/null
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"

# Until no container of the stack is left, so the next run starts from nothing.
skiff_gone() {
  $B -H "$H" stack rm bench >/dev/null 2>&1 || true
  for _ in $(seq 600); do
    [ -z "$($B -H "$H" ps -aq 2>/dev/null)" ] && return 0
    sleep 0.1
  done
}
skiff_run() {
  local s e
  s=$(date +%s%N)
  $B -H "$H" stack deploy -c "$work/app.yaml" --detach=false --timeout 5m bench >/dev/null
  e=$(date +%s%N)
  echo $(( (e - s) / 1000000 ))
}

swarm=false
if command -v dockerd >/dev/null; then
  # The docker CLI first on PATH: Debian's 20.10 CLI refuses a Compose file without
  # `version:` in `stack deploy`; a newer CLI negotiates the daemon's API version.
  D="${DOCKER:-docker} -H unix://$work/docker.sock"
  bench_exec_root "$work/docker-run"
  dockerd --data-root "$work/docker" --exec-root "$work/docker-run" -H "unix://$work/docker.sock" \
    --pidfile "$work/docker.pid" --bridge none --iptables=false >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 100); do $D info >/dev/null 2>&1 && break; sleep 0.2; done
  $D import "$work/bb.tar" busybox:latest >/dev/null
  if $D swarm init --advertise-addr 127.0.0.1 >/dev/null 2>&1; then swarm=true; else
    echo "docker swarm init failed; see $work/dockerd.log"
  fi
fi
swarm_gone() {
  $D stack rm bench >/dev/null 2>&1 || true
  for _ in $(seq 600); do
    [ -z "$($D ps -aq 2>/dev/null)" ] && [ -z "$($D network ls -q --filter name=bench_ 2>/dev/null)" ] && return 0
    sleep 0.2
  done
}
swarm_run() {
  local s e r=
  s=$(date +%s%N)
  $D stack deploy -c "$work/app.yaml" bench >/dev/null 2>"$work/swarm.err" || { echo "docker stack deploy failed: $(cat "$work/swarm.err")" >&2; return 1; }
  for _ in $(seq 3000); do
    r=$($D service ls --format '{{.Replicas}}' 2>/dev/null | head -1)
    [ "$r" = "$N/$N" ] && break
    sleep 0.2
  done
  e=$(date +%s%N)
  [ "$r" = "$N/$N" ] || echo "swarm did not converge (replicas: $r)" >&2
  echo $(( (e - s) / 1000000 ))
}

# One untimed deploy on each side first: the first one after start-up also paid for
# work that is not a deploy's (dockerd still settling after `swarm init` while skiff
# deployed; page cache, first exec of the shim), which made run 1 the outlier of
# every invocation on either side.
skiff_run >/dev/null; skiff_gone
if $swarm; then swarm_run >/dev/null; swarm_gone; fi

# RUNS runs; in each, both deploy the same file from nothing (order alternating),
# and the ratio is taken within the run.
: >"$work/ratios"
for run in $(seq "$RUNS"); do
  if $swarm && [ $((run % 2)) -eq 0 ]; then
    swarm_ms=$(swarm_run); swarm_gone
    skiff_ms=$(skiff_run); skiff_gone
  else
    skiff_ms=$(skiff_run); skiff_gone
    swarm_ms=n/a
    if $swarm; then swarm_ms=$(swarm_run); swarm_gone; fi
  fi
  r=n/a
  if $swarm; then r=$(awk -v a="$swarm_ms" -v b="$skiff_ms" 'BEGIN {printf "%.2f", a/b}'); echo "$r" >>"$work/ratios"; fi
  echo "run $run: stack deploy of $N replicas to all running: skiff ${skiff_ms} ms, swarm ${swarm_ms} ms, swarm/skiff $r"
done
if $swarm; then
  echo "swarm/skiff over $RUNS runs (worst run decides a goal): $(sort -n "$work/ratios" | awk 'NR == 1 {lo=$1} {hi=$1} END {printf "%.2f-%.2f", lo, hi}')"
fi
