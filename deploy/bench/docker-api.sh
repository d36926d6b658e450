#!/usr/bin/env bash
# The Docker Engine API benchmark: the same docker CLI against Skiff's docker socket and
# against a private dockerd (Debian's docker.io, --bridge none --iptables=false, so the
# host's firewall is never touched), in the same run:
#  - `docker run --rm --network none busybox true`, rounds interleaved in random order,
#    median of N;
#  - `docker ps` with 100 running containers on each engine, median of N;
#  - agent RSS with and without the Docker API (`--docker-socket ""`), after the same
#    work through skiff's own CLI (20 runs, 10 idle containers).
# Usage: deploy/bench/docker-api.sh [N]   (as root; builds the release binary)
# DOCKER=/usr/bin/docker picks the CLI (default: the one on PATH).
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/bench/lib.sh
N=${1:-20}
command -v dockerd >/dev/null || { echo "needs dockerd: apt-get install docker.io" >&2; exit 1; }
cargo build --release --quiet --bin skiff --bin skiff-shim
B=${CARGO_TARGET_DIR:-$PWD/target}/release/skiff
DOCKER=${DOCKER:-docker}
work=$(mktemp -d /tmp/skdapi.XXXX)
H=unix://$work/s.sock
S="$DOCKER -H unix://$work/docker.sock"
D="$DOCKER -H unix://$work/dockerd.sock"
agent_pid= dockerd_pid=
stop_agent() {
  for id in $($B -H "$H" ps -aq 2>/dev/null); do $B -H "$H" rm -f "$id" >/dev/null 2>&1 || true; done
  if [ -n "$agent_pid" ]; then kill -9 "$agent_pid" 2>/dev/null; wait "$agent_pid" 2>/dev/null || true; fi
  agent_pid=
  cleanup_agent_network "$work/root"
}
cleanup() {
  stop_agent
  if [ -n "$dockerd_pid" ]; then
    for id in $($D ps -aq 2>/dev/null); do $D rm -f "$id" >/dev/null 2>&1 || true; done
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  fi
  grep " $work" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
start_agent() {
  $B agent --root "$work/root" --exec-root "$work/run" --host "$H" "$@" >>"$work/agent.log" 2>&1 &
  agent_pid=$!
  for _ in $(seq 100); do $B -H "$H" version >/dev/null 2>&1 && break; sleep 0.1; done
}
examples/images/busybox/build.sh "$work/bb.tar" >/dev/null
start_agent
$B -H "$H" image import "$work/bb.tar" busybox:latest -c 'CMD ["sh"]' >/dev/null
dockerd --data-root "$work/docker" --exec-root "$work/docker-run" -H "unix://$work/dockerd.sock" \
  --pidfile "$work/docker.pid" --bridge none --iptables=false >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 100); do $D info >/dev/null 2>&1 && break; sleep 0.2; done
$D import "$work/bb.tar" busybox:latest -c 'CMD ["sh"]' >/dev/null

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
time_ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a+0 > 0 && b+0 > 0) printf "%.2f", a/b; else print "n/a"}'; }

for _ in 1 2 3; do
  $S run --rm --network none busybox true >/dev/null
  $D run --rm --network none busybox true >/dev/null
done
: >"$work/t.skiff"; : >"$work/t.docker"
for _ in $(seq "$N"); do
  for k in $(printf 'skiff\ndocker\n' | shuf); do
    case $k in
      skiff) time_ms $S run --rm --network none busybox true ;;
      docker) time_ms $D run --rm --network none busybox true ;;
    esac >>"$work/t.$k"
  done
done
run_skiff=$(median <"$work/t.skiff")
run_docker=$(median <"$work/t.docker")

# docker ps with 100 running containers on each side.
for i in $(seq 100); do
  $S run -d --network none --name "p$i" busybox sleep 100000 >/dev/null
  $D run -d --network none --name "p$i" busybox sleep 100000 >/dev/null
done
: >"$work/p.skiff"; : >"$work/p.docker"
for _ in $(seq "$N"); do
  for k in $(printf 'skiff\ndocker\n' | shuf); do
    case $k in
      skiff) time_ms $S ps ;;
      docker) time_ms $D ps ;;
    esac >>"$work/p.$k"
  done
done
[ "$($S ps -q | wc -l)" = 100 ] || { echo "skiff: expected 100 containers in docker ps" >&2; exit 1; }
ps_skiff=$(median <"$work/p.skiff")
ps_docker=$(median <"$work/p.docker")
for i in $(seq 100); do $D rm -f "p$i" >/dev/null; done

# Agent memory with and without the Docker API, after the same work.
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# (Not in a $(...) subshell: the agent's pid must reach stop_agent.)
mem_after_work() {
  stop_agent
  start_agent "$@"
  for _ in $(seq 20); do $B -H "$H" run --rm --network none busybox true >/dev/null; done
  for i in $(seq 10); do $B -H "$H" run -d --network none --name "idle$i" busybox sleep 600 >/dev/null; done
  $B -H "$H" ps >/dev/null
  mem_rss=$(rss "$agent_pid")
}
mem_after_work
rss_with=$mem_rss
mem_after_work --docker-socket ""
rss_without=$mem_rss

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r); CLI: $($S version --format '{{.Client.Version}}' 2>/dev/null || echo unknown)"
echo "rounds: $N (median wall time; commands interleaved in random order)"
echo "docker run --rm --network none busybox true: skiff ${run_skiff} ms, dockerd ${run_docker} ms   dockerd/skiff: $(ratio "$run_docker" "$run_skiff")"
echo "docker ps, 100 containers:                   skiff ${ps_skiff} ms, dockerd ${ps_docker} ms   dockerd/skiff: $(ratio "$ps_docker" "$ps_skiff")"
echo "agent RSS after the same work: with the Docker API $((rss_with / 1024)) MiB, without $((rss_without / 1024)) MiB   with/without: $(ratio "$rss_with" "$rss_without")"
