#!/bin/bash
# Networking benchmark (root; needs iperf3 and bc from apt): throughput through a
# published port (nftables DNAT) against a direct routed connection to the container
# IP, both from a separate network namespace acting as another host, in one run; and
# the per-container start-time cost of the default bridge network over --network none.
#   SKIFF=target/release/skiff T=10 N=20 examples/network/bench.sh
set -u
B=${SKIFF:-/work/targets/net/debug/skiff}
D=$(mktemp -d /tmp/skbXXXX)
H="--host unix://$D/s.sock"
$B agent --root $D/root --exec-root $D/run --host unix://$D/s.sock > $D/agent.log 2>&1 &
AP=$!
cleanup() {
  $B $H rm -f ipf >/dev/null 2>&1
  kill -9 $AP; sleep 0.3
  # The agent's table and links are named after a hash of its --root.
  h=$(printf %s "$D/root" | sha256sum | cut -c1-8)
  nft delete table inet skiff-$h 2>/dev/null
  for l in $(ls /sys/class/net | grep "^sk${h:0:5}"); do ip link del $l 2>/dev/null; done
  ip link del skbenchh 2>/dev/null; ip netns del skbench 2>/dev/null
  rm -rf $D
}
trap cleanup EXIT
sleep 1
bash examples/images/busybox/build.sh $D/bb.tar >/dev/null && $B $H image import $D/bb.tar busybox:latest -c 'CMD ["sh"]' >/dev/null
ip netns add skbench; ip link add skbenchh type veth peer name eth0 netns skbench
ip addr add 10.250.99.1/30 dev skbenchh; ip link set skbenchh up
ip -n skbench addr add 10.250.99.2/30 dev eth0; ip -n skbench link set eth0 up; ip -n skbench link set lo up
ip -n skbench route add 172.16.0.0/12 via 10.250.99.1
$B $H run -d --name ipf -p 15201:5201 busybox sleep 600 >/dev/null
SB=$($B $H inspect -f '{{.NetworkSettings.SandboxKey}}' ipf)
CIP=$($B $H inspect -f '{{.NetworkSettings.IPAddress}}' ipf)
nsenter --net=$SB iperf3 -s -D -1 >/dev/null; sleep 0.5
echo "published (DNAT 10.250.99.1:15201 -> $CIP:5201):"
ip netns exec skbench iperf3 -c 10.250.99.1 -p 15201 -t ${T:-10} -f g | grep -E "sender|receiver"
nsenter --net=$SB iperf3 -s -D -1 >/dev/null; sleep 0.5
echo "direct ($CIP:5201, routed through the host):"
ip netns exec skbench iperf3 -c $CIP -p 5201 -t ${T:-10} -f g | grep -E "sender|receiver"
for mode in none bridge; do
  s=$(date +%s.%N)
  for i in $(seq 1 ${N:-20}); do $B $H run --rm --network $mode busybox true; done
  e=$(date +%s.%N)
  echo "run --rm --network $mode busybox true: $(echo "($e - $s) * 1000 / ${N:-20}" | bc -l | cut -c1-6) ms per container (N=${N:-20})"
done
