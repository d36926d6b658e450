#!/usr/bin/env bash
# Whole-system benchmark for the single-host engine (issue 2):
#  - `skiff run --rm busybox true` (default bridge network) and with `--network none`,
#  - `runc run` on a prepared bundle of the same rootfs (no image, overlay or network),
#  - `docker run --rm --network none busybox true` on a private dockerd (Debian's
#    docker.io, started here with --bridge none --iptables=false, so the host's
#    firewall is never touched), where dockerd is installed,
#  - agent RSS and per-container shim memory (RSS, PSS, private dirty), SETTLE (35) s
#    after starting IDLE
#    containers running; the shim is the skiff-shim beside SKIFF if there is one, else
#    `skiff shim` (move skiff-shim away to measure that fallback).
#  - with SKIFF_LOG_SPANS=1 SKIFF_LOG=info,skiff_agent=debug in the environment: the
#    agent's `shim_spawn` span (spawning the shim until its report: exec, mounts, the
#    container's creation), median over the whole script's containers.
# The commands are interleaved, one of each per round in a random order, so load from
# anything else on the machine falls on all of them alike; each figure is the median over
# N rounds.
# Per-step timings: SKIFF_LOG_SPANS=1 SKIFF_LOG=info,skiff_agent=debug on the agent
# logs every span's close with its duration (see BENCHMARKS.md).
# Usage: deploy/bench/engine.sh [N] [RUNS]   (as root; builds the release binaries unless
# SKIFF=path/to/skiff is given; RUNS
# runs of N rounds, default 3, each with its own medians, then the range of each ratio)
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
# The CLI of the same release as Debian's dockerd (a newer CLI may be first on PATH).
DOCKER=${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}
D="$DOCKER -H unix://$work/docker.sock"
cleanup() {
  for id in $($B -H "$H" ps -aq 2>/dev/null); do $B -H "$H" rm -f "$id" >/dev/null 2>&1 || true; done
  if [ -n "$agent_pid" ]; then kill -9 "$agent_pid" 2>/dev/null; wait "$agent_pid" 2>/dev/null; fi || true
  cleanup_agent_network "$work/root"
  runc delete -f skbench >/dev/null 2>&1 || true
  runc delete -f skbench-sc >/dev/null 2>&1 || true
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  fi
  grep " $work" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# No Docker API socket: its default path (docker.sock beside s.sock) is where the private
# dockerd listens.
bench_exec_root "$work/run"
$B agent --root "$work/root" --exec-root "$work/run" --host "$H" --docker-socket "" >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do $B -H "$H" version >/dev/null 2>&1 && break; sleep 0.1; done
if [ -x "$(dirname "$B")/skiff-shim" ]; then
  echo "shim: $(dirname "$B")/skiff-shim"
else
  echo "shim: $B shim (no skiff-shim beside $B)"
fi
examples/images/busybox/build.sh "$work/bb.tar" >/dev/null
$B -H "$H" image import "$work/bb.tar" busybox:latest >/dev/null

# runc on a prepared bundle of the same rootfs.
mkdir -p "$work/bundle/rootfs"
tar -C "$work/bundle/rootfs" -xf "$work/bb.tar"
(cd "$work/bundle" && runc spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"true"/' config.json)
# The same bundle with the seccomp filter skiff applies by default (Docker's profile),
# taken from a running container's generated config: runc compiles it as skiff does.
sid=$($B -H "$H" run -d --network none busybox sleep 60)
mkdir -p "$work/bundle-sc"
jq --slurpfile s <(jq '.linux.seccomp' "$work/run/containers/$sid/config.json") \
  --arg root "$work/bundle/rootfs" '.linux.seccomp = $s[0] | .root.path = $root' \
  "$work/bundle/config.json" >"$work/bundle-sc/config.json"
$B -H "$H" rm -f "$sid" >/dev/null

docker=false
if command -v dockerd >/dev/null; then
  bench_exec_root "$work/docker-run"
  dockerd --data-root "$work/docker" --exec-root "$work/docker-run" -H "unix://$work/docker.sock" \
    --pidfile "$work/docker.pid" --bridge none --iptables=false >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 100); do $D info >/dev/null 2>&1 && break; sleep 0.2; done
  # The same offline base image on Docker's side.
  if $D import "$work/bb.tar" busybox:latest >/dev/null 2>&1; then docker=true; fi
fi

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
time_ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>"$work/last.err" || { echo "failed: $* ($(head -3 "$work/last.err" | tr "\n" " "))" >&2; return 1; }; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }

# Warm up page cache, the agent and the daemon.
for _ in 1 2 3; do
  $B -H "$H" run --rm busybox true >/dev/null
  runc run -b "$work/bundle" skbench >/dev/null 2>&1 || true
  runc run -b "$work/bundle-sc" skbench-sc >/dev/null 2>&1 || true
  if $docker; then $D run --rm --network none busybox true >/dev/null 2>&1 || true; fi
done
# Each round runs the commands in a fresh random order: what one leaves working in the
# background (Docker's cleanup, the kernel's deferred namespace and link teardown) then
# falls on every other command alike instead of always on the one after it.
one() {
  case $1 in
    skiff) time_ms $B -H "$H" run --rm busybox true ;;
    none) time_ms $B -H "$H" run --rm --network none busybox true ;;
    runc) time_ms runc run -b "$work/bundle" skbench ;;
    runcsc) time_ms runc run -b "$work/bundle-sc" skbench-sc ;;
    docker) time_ms $D run --rm --network none busybox true ;;
  esac >>"$work/t.$1"
}
kinds="skiff none runc runcsc"
if $docker; then kinds="$kinds docker"; fi
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a+0 > 0 && b+0 > 0) printf "%.2f", a/b; else print "n/a"}'; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
echo "runs: $RUNS of $N rounds each (median wall time per run; commands interleaved in random order)"
# One line of ratios per run, gathered for the ranges at the end.
: >"$work/ratios"
for run in $(seq "$RUNS"); do
  : >"$work/t.skiff"; : >"$work/t.none"; : >"$work/t.runc"; : >"$work/t.runcsc"; : >"$work/t.docker"
  for _ in $(seq "$N"); do
    for k in $(printf '%s\n' $kinds | shuf); do one "$k"; done
  done
  skiff_ms=$(median <"$work/t.skiff")
  none_ms=$(median <"$work/t.none")
  runc_ms=$(median <"$work/t.runc")
  runcsc_ms=$(median <"$work/t.runcsc")
  docker_ms=n/a
  if $docker; then docker_ms=$(median <"$work/t.docker"); fi
  echo "run $run:"
  echo "  skiff run --rm busybox true (bridge):  ${skiff_ms} ms   ratio skiff/runc: $(ratio "$skiff_ms" "$runc_ms")"
  echo "  skiff run --rm --network none:         ${none_ms} ms   ratio skiff/runc: $(ratio "$none_ms" "$runc_ms")"
  echo "  runc run (prepared bundle):            ${runc_ms} ms"
  echo "  runc run, skiff's seccomp profile:     ${runcsc_ms} ms   ratio skiff(none)/runc: $(ratio "$none_ms" "$runcsc_ms"), skiff(bridge)/runc: $(ratio "$skiff_ms" "$runcsc_ms")"
  echo "  docker run --rm --network none:        ${docker_ms} ms   ratio docker/skiff(none): $(ratio "$docker_ms" "$none_ms"), docker/skiff(bridge): $(ratio "$docker_ms" "$skiff_ms")"
  echo "$(ratio "$skiff_ms" "$runc_ms") $(ratio "$none_ms" "$runc_ms") $(ratio "$docker_ms" "$none_ms") $(ratio "$docker_ms" "$skiff_ms")" >>"$work/ratios"
done
# min-max of column $1 over the runs ("n/a" when a peer is missing).
range() { awk -v c="$1" '$c != "n/a" {v=$c+0; if (n == 0 || v < lo) lo=v; if (n == 0 || v > hi) hi=v; n++} END {if (n) printf "%.2f-%.2f", lo, hi; else print "n/a"}' "$work/ratios"; }
echo "ranges over $RUNS runs (worst run decides a goal):"
echo "  skiff(bridge)/runc: $(range 1)   skiff(none)/runc: $(range 2)"
echo "  docker/skiff(none): $(range 3)   docker/skiff(bridge): $(range 4)"

# Memory: agent and shims with IDLE (default 100) idle containers.
IDLE=${IDLE:-100}
for i in $(seq "$IDLE"); do $B -H "$H" run -d --name "idle$i" busybox sleep 600 >/dev/null; done
# Steady state, not the peak of the burst: past one period of the agent's heap trim (30 s).
sleep "${SETTLE:-35}"
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
agent_rss=$(rss "$agent_pid")
# `skiff-shim --task ...`, or `skiff shim --task ...` (the fallback).
shims() { pgrep -f "skiff[- ]shim --task $work"; }
shim_rss=$(for p in $(shims); do rss "$p"; done | median)
# RSS counts the binary's text, shared by every shim; PSS splits shared pages among
# their users, and private dirty pages are what each shim costs on its own.
sync
rollup() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/smaps_rollup"; }
shim_pss=$(for p in $(shims); do rollup "$p" Pss; done | median)
shim_priv=$(for p in $(shims); do rollup "$p" Private_Dirty; done | median)
shim_priv_max=$(for p in $(shims); do rollup "$p" Private_Dirty; done | sort -n | tail -1)

echo "agent RSS with $IDLE containers: $((agent_rss / 1024)) MiB"
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k/1024}'; }
echo "shim RSS (median of $IDLE): $(mib "$shim_rss") MiB, PSS $(mib "$shim_pss") MiB, private dirty $(mib "$shim_priv") MiB"
echo "shim in kB (median of $IDLE): RSS $shim_rss, PSS $shim_pss, Private_Dirty $shim_priv (max $shim_priv_max)"
if [ "${SKIFF_LOG_SPANS:-}" = 1 ]; then
  # Span closes read `shim_spawn: ... close time.busy=1.2ms time.idle=3.4ms` (colours
  # stripped): the sum is the span's wall time.
  spawn_ms=$(awk '{ gsub(/\033\[[0-9;]*m/, "") } /shim_spawn/ && / close / {
      t = 0
      for (i = 1; i <= NF; i++) if ($i ~ /^time\.(busy|idle)=/) {
        v = $i; sub(/^[^=]*=/, "", v); u = v; sub(/^[0-9.]+/, "", u); v += 0
        if (u == "ns") v /= 1e6; else if (u == "µs" || u == "us") v /= 1e3; else if (u == "s") v *= 1e3
        t += v
      }
      printf "%.2f\n", t
    }' "$work/agent.log")
  echo "shim_spawn span (median of $(echo "$spawn_ms" | grep -c .)): $(echo "$spawn_ms" | median) ms"
fi
