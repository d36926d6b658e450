#!/usr/bin/env bash
# Scale run: M real managers (`skiff agent` on loopback, distinct ports) and N simulated
# nodes (`skiff-sim`: real join, certificates, heartbeat and assignment streams over
# mutual TLS, the real executor over an in-memory engine) in one process.
#   (1) N nodes join, then a steady state: join time, leader CPU %, manager RSS, nodes
#       wrongly marked down;
#   (2) `stack deploy` of 100 services totalling T tasks (on the simulated nodes only):
#       time to all reported running; a rolling update of the largest service at
#       parallelism 1000 (the most tasks seen not running at once must stay <= 1000);
#       `stack rm` to no task container left.
# Ends with exactly one line: `N nodes, T tasks running in S s`.
#   deploy/bench/scale.sh [--nodes N] [--tasks T] [--managers M] [--steady SECS]
#                         [--network overlay|bridge]   (root)
# The stack's network is an overlay by default (as Swarm's); `bridge` makes it node-local,
# which leaves the overlay data plane (every endpoint of a network sent to every node
# on it) out of the measurement.
#   SKIFF=..., SKIFF_SIM=... to use prebuilt binaries (default: debug builds here).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=1000 T=50000 M=3 STEADY=30 PAR=1000 NET=overlay
while [ $# -gt 0 ]; do
  case $1 in
    --nodes) N=$2; shift 2 ;;
    --tasks) T=$2; shift 2 ;;
    --managers) M=$2; shift 2 ;;
    --steady) STEADY=$2; shift 2 ;;
    --network) NET=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
TD=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${SKIFF:-}" ] || [ -z "${SKIFF_SIM:-}" ]; then
  cargo build --quiet --bin skiff --bin skiff-shim
  cargo build --quiet -p skiff-chaos --bin skiff-sim
fi
B=${SKIFF:-$TD/debug/skiff}
SIM=${SKIFF_SIM:-$TD/debug/skiff-sim}
D=$(mktemp -d /tmp/skscaleXXXX)
pids=()
cleanup() {
  exec 3>&- 2>/dev/null || true
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  . deploy/bench/lib.sh
  for i in $(seq 1 "$M"); do cleanup_agent_network "$D/m$i/root"; done
  # The managers' standby network namespaces (bind mounts in their exec roots).
  grep " $D" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$D"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sk() { local i=$1; shift; "$B" -H "unix://$D/m$i/s.sock" "$@"; }
now() { date +%s%N; }
ms_since() { echo $(( ($(now) - $1) / 1000000 )); }
start_manager() {
  local i=$1; shift
  mkdir -p "$D/m$i"; : >"$D/m$i/agent.yaml"
  SKIFF_LOG=${MANAGER_LOG:-warn} "$B" -H "unix://$D/m$i/s.sock" agent --root "$D/m$i/root" \
    --exec-root "$D/m$i/run" --config "$D/m$i/agent.yaml" \
    --default-addr-pool "10.$((100 + i)).0.0/16" "$@" >"$D/m$i/agent.log" 2>&1 &
  pids+=($!); echo $! >"$D/m$i/pid"
  for _ in $(seq 300); do sk "$i" cluster info >/dev/null 2>&1 && return; sleep 0.1; done
  echo "manager $i did not start; log:" >&2; cat "$D/m$i/agent.log" >&2; exit 1
}
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
P1=$(port)
start_manager 1 --listen-addr "127.0.0.1:$P1"
MT=$(sk 1 cluster join-token -q manager | tr -d '[:space:]')
WT=$(sk 1 cluster join-token -q worker | tr -d '[:space:]')
for i in $(seq 2 "$M"); do
  start_manager "$i" --listen-addr "127.0.0.1:$(port)" --join "127.0.0.1:$P1" --token "$MT"
done
leader() {  # the index of the manager that leads
  local l i; l=$(sk 1 cluster info | sed -n 's/^Leader: *//p')
  for i in $(seq 1 "$M"); do
    [ "$(sk "$i" cluster info | sed -n 's/^Node ID: *//p')" = "$l" ] && { echo "$i"; return; }
  done
  echo 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mib() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
downs() { sk "$(leader)" node ls | grep -c -i ' down ' || true; }

# (1) join and steady state
mkfifo "$D/sim.in"
"$SIM" --join "127.0.0.1:$P1" --token "$WT" --nodes "$N" --dir "$D/sim" \
  <"$D/sim.in" >"$D/sim.out" 2>"$D/sim.err" &
pids+=($!); SIMPID=$!
exec 3>"$D/sim.in"
until grep -q "joined\|not every" "$D/sim.out" 2>/dev/null; do
  kill -0 "$SIMPID" 2>/dev/null || { echo "skiff-sim exited:" >&2; cat "$D/sim.err" >&2; exit 1; }
  sleep 0.2
done
echo "join: $(cat "$D/sim.out")"
sim() {  # sends a command, prints the answer line
  local before; before=$(wc -l <"$D/sim.out")
  echo "$*" >&3
  until [ "$(wc -l <"$D/sim.out")" -gt "$before" ]; do sleep 0.05; done
  tail -n 1 "$D/sim.out"
}
jnum() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
L=$(leader); LP=$(cat "$D/m$L/pid"); HZ=$(getconf CLK_TCK)
sleep 5  # let the join burst settle before measuring
c0=$(cpu_ticks "$LP"); t0=$(now); maxdown=0; s0=$(sim stats | jnum streams_opened)
for _ in $(seq 1 $((STEADY / 5))); do
  sleep 5; d=$(downs); [ "$d" -gt "$maxdown" ] && maxdown=$d
done
c1=$(cpu_ticks "$LP"); el=$(ms_since "$t0")
cpu=$(( (c1 - c0) * 100000 / HZ / el ))
rss=""; for i in $(seq 1 "$M"); do rss="$rss m$i=$(rss_mib "$(cat "$D/m$i/pid")")MiB"; done
reopened=$(( $(sim stats | jnum streams_opened) - s0 ))
echo "steady state ${STEADY}s: leader (m$L) CPU ${cpu}% of a core, manager RSS:$rss, sim RSS $(rss_mib "$SIMPID")MiB, nodes marked down: $maxdown (none was killed), assignment streams reopened: $reopened"

# (2) deploy, rolling update, remove
BIG=$(( T / 10 )); REST=$(( (T - BIG) / 99 )); EXTRA=$(( T - BIG - REST * 99 ))
SUBNET=10.200.0.0/16; [ "$T" -gt 60000 ] && SUBNET=10.192.0.0/12
{
  echo "services:"
  for s in $(seq 0 99); do
    r=$REST; [ "$s" = 0 ] && r=$BIG; [ "$s" = 1 ] && r=$((REST + EXTRA))
    printf '  s%03d:\n    image: busybox:latest\n    command: ["sleep", "100000"]\n    stop_grace_period: 1s\n' "$s"
    printf '    deploy:\n      replicas: %d\n      placement:\n        constraints: [node.role == worker]\n' "$r"
    printf '      update_config: {parallelism: %d, monitor: 1s}\n' "$PAR"
  done
  if [ "$NET" = overlay ]; then
    printf 'networks:\n  default:\n    ipam:\n      config: [{subnet: %s}]\n' "$SUBNET"
  else
    printf 'networks:\n  default:\n    driver: %s\n' "$NET"
  fi
} >"$D/app.yaml"
s=$(now)
sk "$L" stack deploy -c "$D/app.yaml" --detach=false --timeout 30m scale >/dev/null
DEPLOY_MS=$(ms_since "$s")
st=$(sim stats)
echo "stack deploy of 100 services, $T tasks ($NET network): all running in $((DEPLOY_MS / 1000)).$(( DEPLOY_MS % 1000 / 100 )) s; sim: $st"
[ "$(echo "$st" | jnum running)" = "$T" ] || echo "WARNING: the simulated nodes run $(echo "$st" | jnum running) task containers, not $T"
[ "$(echo "$st" | jnum duplicates)" = 0 ] || echo "WARNING: tasks running in two containers"

s=$(now); maxgap=0
sk "$L" service update --env-add ROLL=1 scale_s000 >/dev/null
while :; do
  rep=$(sk "$L" service ls | awk '$2 == "scale_s000" {print $4}')
  run=${rep%/*}; want=${rep#*/}
  [ $((want - run)) -gt "$maxgap" ] && maxgap=$((want - run))
  state=$(sk "$L" service inspect scale_s000 | tr -d '\n ' | sed -n 's/.*"UpdateStatus":{[^}]*"state":"\([a-z_]*\)".*/\1/p')
  [ "$state" = completed ] && [ "$run" = "$want" ] && break
  [ "$(ms_since "$s")" -gt 1800000 ] && { echo "rolling update did not complete"; break; }
  sleep 0.5
done
ok=respected; [ "$maxgap" -gt "$PAR" ] && ok=EXCEEDED
echo "rolling update of scale_s000 ($BIG tasks, parallelism $PAR): $(( $(ms_since "$s") / 1000 )) s; most tasks not running at once: $maxgap ($ok)"

s=$(now)
sk "$L" stack rm scale >/dev/null
until [ "$(sim stats | jnum running)" = 0 ]; do sleep 1; done
echo "stack rm to no task container left: $(( $(ms_since "$s") / 1000 )) s; nodes marked down now: $(downs)"
echo "quit" >&3
echo "$N nodes, $T tasks running in $((DEPLOY_MS / 1000)).$(( DEPLOY_MS % 1000 / 100 )) s"
