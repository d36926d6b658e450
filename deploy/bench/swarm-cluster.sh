#!/usr/bin/env bash
# The Swarm peer of deploy/bench/stack-cluster.sh (issue 7): Docker Swarm on hosts made
# of network namespaces on one bridge (one manager that runs no replica, W workers), each
# namespace running its own dockerd (Debian's docker.io, --iptables=false --bridge none,
# private data and exec roots). Times `docker stack deploy` of N busybox replicas over the
# workers to N/N running, with the same file as the skiff benchmark (a /16 overlay).
#   deploy/bench/swarm-cluster.sh [REPLICAS] [WORKERS]   (root; default 300 over 3)
# Removes every namespace, link, mount, process and file it made, even when it fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/bench/lib.sh
N=${1:-300}
W=${2:-3}
command -v dockerd >/dev/null || { echo "needs dockerd: apt-get install docker.io" >&2; exit 1; }
work=$(mktemp -d /tmp/skswarmXXXX)
br=skswb0
net=10.252.9
hosts=(manager1)
for i in $(seq 1 "$W"); do hosts+=("worker$i"); done
ns() { echo "sksw-$1"; }
d() { local h=$1; shift; docker -H "unix://$work/$h/docker.sock" "$@"; }
cleanup() {
  for h in "${hosts[@]}"; do
    d "$h" swarm leave --force >/dev/null 2>&1 || true
  done
  for h in "${hosts[@]}"; do
    [ -f "$work/$h/docker.pid" ] && kill "$(cat "$work/$h/docker.pid")" 2>/dev/null || true
  done
  sleep 3
  for h in "${hosts[@]}"; do
    ip netns pids "$(ns "$h")" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  done
  grep " $work" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  for h in "${hosts[@]}"; do ip netns del "$(ns "$h")" 2>/dev/null || true; done
  ip link del "$br" 2>/dev/null || true
  rm -rf "$work"
}
[ -n "${KEEP:-}" ] || trap cleanup EXIT
ip link add "$br" type bridge
ip addr add "$net.1/24" dev "$br"
ip link set "$br" up
examples/images/busybox/build.sh "$work/bb.tar" >/dev/null
i=10
for h in "${hosts[@]}"; do
  n=$(ns "$h")
  ip netns add "$n"
  ip link add "skswv$i" type veth peer name eth0 netns "$n"
  ip link set "skswv$i" master "$br" up
  ip -n "$n" addr add "$net.$i/24" dev eth0
  ip -n "$n" link set eth0 up
  ip -n "$n" link set lo up
  mkdir -p "$work/$h"
  bench_exec_root "$work/$h/run"
  # nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup hierarchies.
  nsenter --net="/run/netns/$n" dockerd --data-root "$work/$h/data" --exec-root "$work/$h/run" \
    -H "unix://$work/$h/docker.sock" --pidfile "$work/$h/docker.pid" \
    --bridge none --iptables=false --ip6tables=false >"$work/$h/dockerd.log" 2>&1 &
  i=$((i + 1))
done
for h in "${hosts[@]}"; do
  for _ in $(seq 150); do d "$h" info >/dev/null 2>&1 && break; sleep 0.2; done
  d "$h" import "$work/bb.tar" busybox:latest >/dev/null
done
d manager1 swarm init --advertise-addr "$net.10" >/dev/null
token=$(d manager1 swarm join-token -q worker)
for h in "${hosts[@]:1}"; do d "$h" swarm join --token "$token" "$net.10:2377" >/dev/null; done
bench_stack_yaml "$N" workers >"$work/app.yaml"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); $(dockerd --version)"
s=$(date +%s%N)
d manager1 stack deploy -c "$work/app.yaml" scale >/dev/null 2>&1
r=
for _ in $(seq 6000); do
  r=$(d manager1 service ls --format '{{.Replicas}}' 2>/dev/null | head -1)
  [ "$r" = "$N/$N" ] && break
  sleep 0.2
done
e=$(date +%s%N)
echo "docker swarm: stack deploy of $N replicas over $W netns workers to all running: $(( (e - s) / 1000000 )) ms (replicas: $r)"
for h in "${hosts[@]}"; do echo "  $h: $(d "$h" ps -q | wc -l) containers running"; done
