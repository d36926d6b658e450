#!/usr/bin/env bash
# The kernel's own VXLAN, as a reference for deploy/bench/overlay.sh (issue 8): the
# overlay topology built with bare `ip` commands and nothing else (no agent, no
# nftables, no conntrack). Two namespace "hosts" on a bridge; in each, a bridge with a
# VXLAN device (nolearning, static fdb and neighbour entries, MTU 1450) and a container
# namespace on a veth. iperf3 container to container against host to host, R
# alternating rounds of T seconds; prints both medians and their ratio.
# TOPO=macvlan replaces the container veth and the bridge with a macvlan on the VXLAN
# device (the leanest path VXLAN allows; it would leave no host hop for VIPs and the
# routing mesh, so it only bounds what a different design could gain).
#   T=5 R=3 [TOPO=macvlan] deploy/bench/vxlan-reference.sh   (root; iperf3 from apt)
# Removes every namespace and link it made, even when it fails.
set -euo pipefail
T=${T:-5}
R=${R:-3}
TOPO=${TOPO:-bridge}
cleanup() {
  for n in vxh1 vxh2 vxc1 vxc2; do ip netns del "$n" 2>/dev/null || true; done
  for l in vxu1 vxu2; do ip link del "$l" 2>/dev/null || true; done
  ip link del vxbr0 2>/dev/null || true
  pkill -f "iperf3 -s -p 5399" 2>/dev/null || true
}
cleanup
trap cleanup EXIT
ip link add vxbr0 type bridge
ip link set vxbr0 up
for i in 1 2; do
  ip netns add "vxh$i"
  ip netns add "vxc$i"
  ip link add "vxu$i" type veth peer name eth0 netns "vxh$i"
  ip link set "vxu$i" master vxbr0 up
  ip -n "vxh$i" addr add "10.98.0.$i/24" dev eth0
  ip -n "vxh$i" link set eth0 up
  ip -n "vxh$i" link set lo up
  ip -n "vxh$i" link add br1 type bridge
  ip -n "vxh$i" link set br1 up
  ip -n "vxh$i" link add vx1 type vxlan id 42 dstport 4789 local "10.98.0.$i" nolearning
  if [ "$TOPO" = macvlan ]; then
    ip -n "vxh$i" link set vx1 mtu 1450 up
    ip -n "vxh$i" link add "cv$i" link vx1 type macvlan mode bridge
    ip -n "vxh$i" link set "cv$i" netns "vxc$i"
    ip -n "vxc$i" link set "cv$i" name eth0
  else
    ip -n "vxh$i" link set vx1 master br1 mtu 1450 up
    ip -n "vxh$i" link add "cv$i" type veth peer name eth0 netns "vxc$i"
    ip -n "vxh$i" link set "cv$i" master br1 mtu 1450 up
  fi
  ip -n "vxc$i" addr add "10.99.0.$i/24" dev eth0
  ip -n "vxc$i" link set eth0 mtu 1450 up
  ip -n "vxc$i" link set lo up
done
mac() { ip -n "vxc$1" -j link show eth0 | python3 -c 'import sys,json; print(json.load(sys.stdin)[0]["address"])'; }
m1=$(mac 1)
m2=$(mac 2)
ip -n vxc1 neigh add 10.99.0.2 lladdr "$m2" dev eth0
ip -n vxc2 neigh add 10.99.0.1 lladdr "$m1" dev eth0
bridge -n vxh1 fdb append "$m2" dev vx1 dst 10.98.0.2
bridge -n vxh2 fdb append "$m1" dev vx1 dst 10.98.0.1
run() { # server-netns client-netns address
  ip netns exec "$1" iperf3 -s -p 5399 -1 >/dev/null 2>&1 &
  sleep 0.4
  ip netns exec "$2" iperf3 -c "$3" -p 5399 -t "$T" -J |
    python3 -c 'import sys,json; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))'
}
echo "topology: $TOPO; machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
o=() u=()
for _ in $(seq "$R"); do
  o+=("$(run vxc1 vxc2 10.99.0.1)")
  u+=("$(run vxh1 vxh2 10.98.0.1)")
done
echo "rounds overlay: ${o[*]}  underlay: ${u[*]}"
python3 - "${#o[@]}" "${o[@]}" "${u[@]}" <<'PY'
import statistics as s, sys
n = int(sys.argv[1]); v = [int(x) for x in sys.argv[2:]]
o, u = s.median(v[:n]), s.median(v[n:])
print("overlay %.2f Gbit/s, underlay %.2f Gbit/s, ratio %.2f" % (o / 1e9, u / 1e9, o / u))
PY
