#!/usr/bin/env bash
# Whole-system benchmark for stacks (issue 7): time from `stack deploy` to all
# replicas running, for N replicas of busybox on one node, side by side in the same
# run with Docker Swarm (`docker swarm init` + `docker stack deploy` of the same file)
# where Debian's docker.io is installed. Also `docker run --rm` for the engine figure.
# Usage: deploy/bench/stack.sh [REPLICAS]   (as root; release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/bench/lib.sh
N=${1:-30}
cargo build --release --quiet
B=${CARGO_TARGET_DIR:-$PWD/target}/release/skiff
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
    docker -H "unix://$work/docker.sock" stack rm bench >/dev/null 2>&1 || true
    docker -H "unix://$work/docker.sock" swarm leave --force >/dev/null 2>&1 || true
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
$B agent --root "$work/root" --exec-root "$work/run" --host "$H" >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do $B -H "$H" version >/dev/null 2>&1 && break; sleep 0.1; done
examples/images/busybox/build.sh "$work/bb.tar" >/dev/null
$B -H "$H" image import "$work/bb.tar" busybox:latest >/dev/null
s=$(date +%s%N)
$B -H "$H" stack deploy -c "$work/app.yaml" --detach=false --timeout 5m bench >/dev/null
e=$(date +%s%N)
skiff_ms=$(( (e - s) / 1000000 ))
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
echo "skiff: stack deploy of $N replicas to all running: ${skiff_ms} ms"

if command -v dockerd >/dev/null; then
  D="docker -H unix://$work/docker.sock"
  dockerd --data-root "$work/docker" --exec-root "$work/docker-run" -H "unix://$work/docker.sock" \
    --pidfile "$work/docker.pid" --bridge none --iptables=false >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 100); do $D info >/dev/null 2>&1 && break; sleep 0.2; done
  $D import "$work/bb.tar" busybox:latest >/dev/null
  for _ in 1 2 3; do $D run --rm busybox true >/dev/null 2>&1 || true; done
  runs=10
  drun=$(for _ in $(seq $runs); do s=$(date +%s%N); $D run --rm --network none busybox true >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "docker run --rm --network none busybox true (median of $runs): ${drun} ms"
  if $D swarm init --advertise-addr 127.0.0.1 >/dev/null 2>&1; then
    s=$(date +%s%N)
    $D stack deploy -c "$work/app.yaml" bench >/dev/null
    for _ in $(seq 3000); do
      r=$($D service ls --format '{{.Replicas}}' 2>/dev/null | head -1)
      [ "$r" = "$N/$N" ] && break
      sleep 0.2
    done
    e=$(date +%s%N)
    echo "docker swarm: stack deploy of $N replicas to all running: $(( (e - s) / 1000000 )) ms (replicas: $r)"
  else
    echo "docker swarm init failed; see $work/dockerd.log"
  fi
fi
