#!/usr/bin/env bash
# Build on deploy: a two-service stack whose services both have `build:` sections,
# deployed until every task runs, cold (nothing built or cached) and cached (the
# images built before; `--build` rebuilds from the builder's cache). Side by side in
# the same run with Docker: `docker-compose build` (Debian's 1.29) + `docker stack
# deploy` on a private dockerd in swarm mode (Swarm cannot build). A fresh agent and a
# fresh dockerd per run, so "cold" is cold for both.
# Usage: deploy/bench/stack-build.sh [RUNS]   (as root; release build, or the binary
# in SKIFF_BIN to try the script itself)
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/bench/lib.sh
RUNS=${1:-3}
if [ -z "${SKIFF_BIN:-}" ]; then cargo build --release --quiet; fi
B=${SKIFF_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/skiff}
work=$(mktemp -d /tmp/skbuild.XXXX)
agent_pid= dockerd_pid=
H= D=

stop_agent() {
  [ -z "$agent_pid" ] && return 0
  $B -H "$H" stack rm bench >/dev/null 2>&1 || true
  sleep 1
  for id in $($B -H "$H" ps -aq 2>/dev/null); do $B -H "$H" rm -f "$id" >/dev/null 2>&1 || true; done
  kill -9 "$agent_pid" 2>/dev/null || true
  wait "$agent_pid" 2>/dev/null || true
  agent_pid=
  cleanup_agent_network "$work/root"
  grep " $work/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work/root" "$work/run"
}

stop_dockerd() {
  [ -z "$dockerd_pid" ] && return 0
  $D stack rm bench >/dev/null 2>&1 || true
  $D swarm leave --force >/dev/null 2>&1 || true
  kill "$dockerd_pid" 2>/dev/null || true
  wait "$dockerd_pid" 2>/dev/null || true
  dockerd_pid=
  iptables -P FORWARD ACCEPT 2>/dev/null || true
  ip link del docker_gwbridge 2>/dev/null || true
  grep " $work/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work/docker" "$work/docker-run"
}

cleanup() {
  stop_agent
  stop_dockerd
  rm -rf "$work"
}
trap cleanup EXIT

ms() { echo $(( ($2 - $1) / 1000000 )); }

# The project: two build contexts with a few MB of files and RUN steps.
proj=$work/proj
for s in api worker; do
  mkdir -p "$proj/$s/files"
  for i in $(seq 1 40); do head -c 65536 /dev/urandom >"$proj/$s/files/f$i"; done
  cat >"$proj/$s/Dockerfile" <<EOF
FROM busybox:latest
ARG NAME=$s
COPY files /srv/files
RUN for i in \$(seq 1 2000); do echo "\$NAME \$i"; done > /srv/list && md5sum /srv/files/* > /srv/sums
RUN dd if=/dev/zero of=/srv/blob bs=1M count=8 2>/dev/null
CMD ["sleep", "100000"]
EOF
done
cat >"$proj/compose.yaml" <<'YAML'
services:
  api:
    image: bench_api:latest
    build: ./api
    stop_grace_period: 1s
  worker:
    image: bench_worker:latest
    build:
      context: ./worker
      args:
        NAME: worker
    stop_grace_period: 1s
    deploy:
      replicas: 2
YAML
examples/images/busybox/build.sh "$work/bb.tar" >/dev/null

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq 1 "$RUNS"); do
  # skiff
  H=unix://$work/s.sock
  $B agent --root "$work/root" --exec-root "$work/run" --host "$H" >"$work/agent.log" 2>&1 &
  agent_pid=$!
  for _ in $(seq 100); do $B -H "$H" version >/dev/null 2>&1 && break; sleep 0.1; done
  $B -H "$H" image import "$work/bb.tar" busybox:latest >/dev/null
  s=$(date +%s%N)
  $B -H "$H" stack deploy -c "$proj/compose.yaml" --detach=false --timeout 5m bench >/dev/null
  e=$(date +%s%N)
  sk_cold=$(ms "$s" "$e")
  s=$(date +%s%N)
  $B -H "$H" stack deploy -c "$proj/compose.yaml" --build --detach=false --timeout 5m bench >/dev/null
  e=$(date +%s%N)
  sk_cached=$(ms "$s" "$e")
  stop_agent

  # docker-compose build + docker stack deploy
  dk_cold=- dk_cached=-
  if command -v dockerd >/dev/null && command -v docker-compose >/dev/null; then
    D="docker -H unix://$work/docker.sock"
    dockerd --data-root "$work/docker" --exec-root "$work/docker-run" -H "unix://$work/docker.sock" \
      --pidfile "$work/docker.pid" --bridge none --iptables=false >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 100); do $D info >/dev/null 2>&1 && break; sleep 0.2; done
    $D import "$work/bb.tar" busybox:latest >/dev/null
    $D swarm init --advertise-addr 127.0.0.1 >/dev/null
    converge() {
      for _ in $(seq 1500); do
        a=$($D service ls --filter name=bench_api --format '{{.Replicas}}' 2>/dev/null)
        w=$($D service ls --filter name=bench_worker --format '{{.Replicas}}' 2>/dev/null)
        [ "$a" = 1/1 ] && [ "$w" = 2/2 ] && return 0
        sleep 0.2
      done
      echo "docker stack did not converge" >&2
      return 1
    }
    s=$(date +%s%N)
    DOCKER_HOST=unix://$work/docker.sock docker-compose -f "$proj/compose.yaml" -p bench build >/dev/null 2>&1
    $D stack deploy -c "$proj/compose.yaml" bench >/dev/null 2>&1
    converge
    e=$(date +%s%N)
    dk_cold=$(ms "$s" "$e")
    s=$(date +%s%N)
    DOCKER_HOST=unix://$work/docker.sock docker-compose -f "$proj/compose.yaml" -p bench build >/dev/null 2>&1
    $D stack deploy -c "$proj/compose.yaml" bench >/dev/null 2>&1
    converge
    e=$(date +%s%N)
    dk_cached=$(ms "$s" "$e")
    stop_dockerd
  fi
  echo "run $run: skiff cold ${sk_cold} ms, cached ${sk_cached} ms; docker-compose build + docker stack deploy cold ${dk_cold} ms, cached ${dk_cached} ms"
done
