# Shared by the benchmark scripts: removes what an agent with --root ROOT left on the
# host after it was killed: its bridges and veths, its nft table, and its (empty)
# cgroup trees. Containers must be removed first (skiff rm -f) so their shims are gone.
cleanup_agent_network() {
  local root=$1 h cg
  h=$(printf %s "$root" | sha256sum | cut -c1-8)
  nft delete table inet "skiff-$h" 2>/dev/null || true
  for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^sk${h:0:5}" || true); do
    ip link del "$l" 2>/dev/null || true
  done
  cg="skiff-$h"
  find /sys/fs/cgroup -maxdepth 3 -type d -name "$cg" 2>/dev/null | while read -r d; do
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}
