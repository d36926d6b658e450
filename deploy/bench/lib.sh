# Shared by the benchmark scripts: removes what an agent with --root ROOT left on the
# host after it was killed: its bridges and veths, its nft table, and its (empty)
# cgroup trees. Containers must be removed first (skiff rm -f) so their shims are gone.
cleanup_agent_network() {
  local root=$1 h cg
  h=$(printf %s "$root" | sha256sum | cut -c1-8)
  nft delete table inet "skiff-$h" 2>/dev/null || true
  # The accept rules the agent put in `ip filter FORWARD` (where such a chain exists).
  nft -a list chain ip filter FORWARD 2>/dev/null | grep "comment \"skiff:skiff-$h\"" |
    sed -n 's/.*# handle \([0-9]*\)$/\1/p' | while read -r handle; do
    nft delete rule ip filter FORWARD handle "$handle" 2>/dev/null || true
  done || true
  for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^sk${h:0:5}" || true); do
    ip link del "$l" 2>/dev/null || true
  done
  cg="skiff-$h"
  find /sys/fs/cgroup -maxdepth 3 -type d -name "$cg" 2>/dev/null | while read -r d; do
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

# Runtime state (the exec root) on a tmpfs, for skiff and dockerd alike, as /run is on
# a systemd host (skiff's default --exec-root is /run/skiff, dockerd's
# /var/run/docker). These machines' root filesystem is ext4 without a journal, where
# allocating an inode skips every inode deleted in the last half minute or so: the
# thousands of short-lived state files of a run made each later run slower than the
# one before (see BENCHMARKS.md, "Stack deploy"). The scripts' cleanup unmounts it.
bench_exec_root() {
  mkdir -p "$1" && mount -t tmpfs -o mode=0711 tmpfs "$1"
}

# The stack the deploy benchmarks give both skiff and Swarm: N replicas of busybox
# sleeping, on a /16 overlay (the default /24 holds about 250 tasks in both systems);
# with "workers", kept off the managers.
bench_stack_yaml() {
  local n=$1 where=${2:-}
  cat <<YAML
services:
  web:
    image: busybox:latest
    command: ["sleep", "100000"]
    stop_grace_period: 1s
    deploy:
      replicas: $n
YAML
  if [ "$where" = workers ]; then
    printf '      placement:\n        constraints: [node.role == worker]\n'
  fi
  cat <<YAML
networks:
  default:
    ipam:
      config: [{subnet: 10.200.0.0/16}]
YAML
}
