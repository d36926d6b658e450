#!/usr/bin/env bash
# Overlay network benchmark (root; needs iperf3 from apt), on a netns cluster of one
# manager and two workers made by deploy/netns-cluster:
#  1. TCP throughput between two containers on different hosts over the overlay
#     (VXLAN), against the same two hosts' namespaces talking over the underlay
#     directly, in the same run: the ratio is what counts.
#  2. Time for a new task to become reachable through its service's virtual IP: from
#     `service scale` to the first answer of the new replica through the VIP, and from
#     the new task's start (its container's start time) to that answer.
#   SKIFF=target/release/skiff T=10 N=5 deploy/bench/overlay.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${SKIFF:-target/release/skiff}
T=${T:-10}
N=${N:-5}
D=$(mktemp -d /tmp/skovbXXXX)
rmdir "$D"
cleanup() {
  pkill -f "iperf3 -s -p 5301" 2>/dev/null || true
  deploy/netns-cluster down --dir "$D" --bin "$B" >/dev/null 2>&1 || true
}
trap cleanup EXIT
deploy/netns-cluster up --managers 1 --workers 2 --dir "$D" --bin "$B" >/dev/null
bash examples/images/busybox/build.sh "$D.bb.tar" >/dev/null
sk() { local h=$1; shift; "$B" -H "unix://$D/$h/s.sock" "$@"; }
for h in manager1 worker1 worker2; do sk "$h" image import "$D.bb.tar" busybox:latest >/dev/null; done
rm -f "$D.bb.tar"
netns_of() { ip netns list | awk '{print $1}' | grep -- "-$1\$"; }
cat > "$D/app.yaml" <<'EOF'
services:
  a:
    image: busybox:latest
    command: [sh, -c, "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
    stop_grace_period: 1s
    deploy:
      placement: {constraints: [node.hostname == worker1]}
  b:
    image: busybox:latest
    command: [sleep, "100000"]
    stop_grace_period: 1s
    deploy:
      placement: {constraints: [node.hostname == worker2]}
EOF
sk manager1 stack deploy -c "$D/app.yaml" --detach=false --timeout 60s bench >/dev/null
cid() { sk "$1" ps -q --no-trunc --filter "label=com.docker.swarm.service.name=$2" | head -1; }
A=$(cid worker1 bench_a)
Bc=$(cid worker2 bench_b)
A_NS="$D/worker1/run/netns/$A"
B_NS="$D/worker2/run/netns/$Bc"
A_IP=$(nsenter --net="$A_NS" ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
W1_IP=$(awk '$1=="worker1"{print $2}' "$D/hosts")

iperf() { # server-netns client-netns address
  nsenter --net="$1" iperf3 -s -p 5301 -1 >/dev/null 2>&1 &
  sleep 0.5
  nsenter --net="$2" iperf3 -c "$3" -p 5301 -t "$T" -J | grep -m1 -A8 '"sum_received"' | grep bits_per_second | tr -dc '0-9.\n' | cut -d. -f1
}
echo "machine: $(nproc) cores, $(uname -r)"
echo "== TCP throughput, container to container across hosts (iperf3 -t $T, R=${R:-3} alternating rounds, medians)"
overs=() unders=()
for _ in $(seq 1 "${R:-3}"); do
  overs+=("$(iperf "$A_NS" "$B_NS" "$A_IP")")
  unders+=("$(iperf "/run/netns/$(netns_of worker1)" "/run/netns/$(netns_of worker2)" "$W1_IP")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
over=$(median "${overs[@]}")
under=$(median "${unders[@]}")
echo "rounds overlay: ${overs[*]}  underlay: ${unders[*]}"
awk -v o="$over" -v u="$under" 'BEGIN{printf "overlay %.2f Gbit/s, underlay %.2f Gbit/s, ratio %.2f\n", o/1e9, u/1e9, o/u}'

echo "== new task reachable through the VIP (N=$N)"
cat > "$D/vip.yaml" <<'EOF'
services:
  web:
    image: busybox:latest
    command: [sh, -c, "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
    stop_grace_period: 1s
  probe:
    image: busybox:latest
    command: [sleep, "100000"]
    stop_grace_period: 1s
    deploy:
      placement: {constraints: [node.hostname == manager1]}
EOF
sk manager1 stack deploy -c "$D/vip.yaml" --detach=false --timeout 60s vip >/dev/null
P=$(cid manager1 vip_probe)
P_NS="$D/manager1/run/netns/$P"
VIP=$(sk manager1 exec "$P" nslookup web 2>/dev/null | awk '/^Address/ {a=$NF} END {print a}')
for i in $(seq 1 "$N"); do
  replicas=$((i + 1))
  known=$(for _ in $(seq 1 $((replicas * 4))); do nsenter --net="$P_NS" timeout 2 bash -c "exec 3<>/dev/tcp/$VIP/80; printf 'GET / HTTP/1.0\r\n\r\n' >&3; tail -n1 <&3" 2>/dev/null; done | sort -u | tr '\n' ' ')
  t0=$(date +%s%N)
  sk manager1 service scale "vip_web=$replicas" >/dev/null
  while :; do
    got=$(nsenter --net="$P_NS" timeout 2 bash -c "exec 3<>/dev/tcp/$VIP/80; printf 'GET / HTTP/1.0\r\n\r\n' >&3; tail -n1 <&3" 2>/dev/null || true)
    if [ -n "$got" ] && ! grep -qw -- "$got" <<<"$known"; then break; fi
  done
  t1=$(date +%s%N)
  # The new replica's container start, on whichever node runs it.
  started=0
  for h in manager1 worker1 worker2; do
    if at=$(sk "$h" inspect -f '{{.State.StartedAt}}' "$got" 2>/dev/null); then
      started=$(date -d "$at" +%s%N)
    fi
  done
  awk -v a="$t0" -v b="$t1" -v s="$started" 'BEGIN{printf "scale -> reachable via VIP: %4.0f ms; container start -> reachable: %4.0f ms\n", (b-a)/1e6, (b-s)/1e6}'
done
