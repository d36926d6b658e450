#!/usr/bin/env bash
# Image distribution (issue 17): an image of about MB megabytes (busybox plus one file
# of random bytes) exists on the manager only; a service with one task on each of W
# workers (one replica per worker, none on the manager). Measured, in the same cluster, runs
# alternating:
#   peer:     `stack deploy --detach=false` to all tasks running; the workers fetch
#             the image from the manager over the cluster port (no registry);
#   registry: `skiff push` of the same image to Debian's docker-registry (on the
#             cluster bridge, plain HTTP) plus the same deploy; the workers pull it.
# Between runs the workers' copies are removed (`rmi`) and the registry starts empty.
#   deploy/bench/image-share.sh [RUNS] [MB] [WORKERS]   (root; default 3 runs, 100 MB, 3)
#   SKIFF=target/release/skiff to use a prebuilt binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/bench/lib.sh
RUNS=${1:-3}
MB=${2:-100}
W=${3:-3}
REG=/usr/bin/docker-registry
[ -x "$REG" ] || { echo "docker-registry is not installed (apt-get install docker-registry)" >&2; exit 1; }
if [ -z "${SKIFF:-}" ]; then
  cargo build --release --quiet --bin skiff --bin skiff-shim
  SKIFF=${CARGO_TARGET_DIR:-$PWD/target}/release/skiff
fi
B=$SKIFF
D=$(mktemp -d /tmp/skimgXXXX)
rmdir "$D"
D=$(realpath -m "$D")
# The bridge address deploy/netns-cluster gives this directory: the workers reach the
# registry there.
h=$(printf %s "$D" | sha256sum | cut -c1-6)
GW=10.251.$((0x${h:0:2})).1
PORT=5117
RADDR=$GW:$PORT
export SKIFF_INSECURE_REGISTRIES=$RADDR # inherited by the agents
regpid=
stop_registry() {
  if [ -n "$regpid" ]; then kill "$regpid" 2>/dev/null || true; wait "$regpid" 2>/dev/null || true; fi
  regpid=
  rm -rf "$D.reg"
}
cleanup() {
  stop_registry
  deploy/netns-cluster down --dir "$D" --bin "$B" >/dev/null 2>&1 || true
  rm -rf "$D.img"
}
trap cleanup EXIT
deploy/netns-cluster up --managers 1 --workers "$W" --dir "$D" --bin "$B" >/dev/null
sk() { local h=$1; shift; "$B" -H "unix://$D/$h/s.sock" "$@"; }
workers=$(awk '$1 ~ /^worker/ {print $1}' "$D/hosts")

mkdir -p "$D.img/files"
bash examples/images/busybox/build.sh "$D.img/rootfs.tar" >/dev/null
head -c "${MB}M" /dev/urandom >"$D.img/files/payload.bin"
tar -rf "$D.img/rootfs.tar" --owner=0 --group=0 -C "$D.img/files" ./payload.bin
sk manager1 image import "$D.img/rootfs.tar" bench/big:1 >/dev/null
size=$(stat -c %s "$D.img/rootfs.tar")
rm -rf "$D.img"

stack_yaml() {
  cat <<YAML
services:
  big:
    image: $1
    command: ["sleep", "100000"]
    stop_grace_period: 1s
    deploy:
      replicas: $W
      placement:
        constraints: [node.role == worker]
        max_replicas_per_node: 1
YAML
}
stack_yaml bench/big:1 >"$D/peer.yaml"
stack_yaml "$RADDR/bench/big:1" >"$D/registry.yaml"

start_registry() {
  mkdir -p "$D.reg"
  cat >"$D.reg/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $D.reg/data
http:
  addr: $RADDR
YAML
  "$REG" serve "$D.reg/config.yml" >"$D.reg/log" 2>&1 &
  regpid=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/$GW/$PORT") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "docker-registry did not start: $(cat "$D.reg/log")" >&2
  exit 1
}

# Removes the stack and every worker's copy of the image, so the next run starts cold.
reset() {
  local stack=$1 image=$2
  sk manager1 stack rm "$stack" >/dev/null
  for w in $workers; do
    while [ "$(sk "$w" ps -aq | wc -l)" -gt 0 ]; do sleep 0.2; done
    sk "$w" rmi "$image" >/dev/null
  done
}

ms() { echo $(( ($2 - $1) / 1000000 )); }

# The agents' own timing of the transfer (log lines of the latest fetch or pull).
transfer_ms() {
  local w out=
  for w in $workers; do
    out="$out $(grep -a "$1" "$D/$w/agent.log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g' | sed -n 's/.* ms=\([0-9]*\).*/\1/p')"
  done
  echo "${out# }"
}

run_peer() {
  local s e
  s=$(date +%s%N)
  sk manager1 stack deploy -c "$D/peer.yaml" --detach=false --timeout 5m peer >/dev/null
  e=$(date +%s%N)
  for w in $workers; do sk "$w" image inspect -f '{{.Id}}' bench/big:1 >/dev/null; done
  echo "peer: $(ms "$s" "$e") ms (fetch per worker, ms: $(transfer_ms "fetched image from a peer"))"
  # The same deploy with the image already on every worker: what is not transfer.
  sk manager1 stack rm peer >/dev/null
  for w in $workers; do while [ "$(sk "$w" ps -aq | wc -l)" -gt 0 ]; do sleep 0.2; done; done
  s=$(date +%s%N)
  sk manager1 stack deploy -c "$D/peer.yaml" --detach=false --timeout 5m peer >/dev/null
  e=$(date +%s%N)
  echo "image already present: $(ms "$s" "$e") ms"
  reset peer bench/big:1
}

run_registry() {
  local s p e
  start_registry
  sk manager1 tag bench/big:1 "$RADDR/bench/big:1"
  s=$(date +%s%N)
  sk manager1 push "$RADDR/bench/big:1" >/dev/null
  p=$(date +%s%N)
  sk manager1 stack deploy -c "$D/registry.yaml" --detach=false --timeout 5m registry >/dev/null
  e=$(date +%s%N)
  echo "registry: $(ms "$s" "$e") ms (push $(ms "$s" "$p") ms, deploy to all running $(ms "$p" "$e") ms; pull per worker, ms: $(transfer_ms "pulled image from a registry"))"
  reset registry "$RADDR/bench/big:1"
  sk manager1 rmi "$RADDR/bench/big:1" >/dev/null
  stop_registry
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "image: one layer of $((size / 1048576)) MiB on manager1; $W workers; registry: $("$REG" --version 2>/dev/null | head -1)"
for i in $(seq "$RUNS"); do
  echo "run $i"
  if [ $((i % 2)) = 1 ]; then run_peer; run_registry; else run_registry; run_peer; fi
done
