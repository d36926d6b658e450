#!/usr/bin/env bash
# Controller benchmark (issue 6): committed writes/s and p50/p99 latency of 3 Skiff
# managers vs a 3-member etcd cluster (Debian's etcd-server) on loopback, 100 clients,
# 256-byte values, write phases alternating; then Skiff's leader failover time (kill -9
# of the leader to the first committed write, median of 10). The test harness kills and
# removes every agent and etcd member it starts.
# Usage: deploy/bench/cluster.sh [DIR]   (as root; DIR holds both systems' state, default
# /var/tmp: a real disk. /tmp is often tmpfs, where fsync costs nothing.)
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v etcd >/dev/null || { echo "needs etcd: apt-get install etcd-server" >&2; exit 1; }
export BENCH_DIR=${1:-/var/tmp}
echo "machine: $(nproc) vCPU, $(free -g | awk '/^Mem:/{print $2}') GiB, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "state: $BENCH_DIR on $(df -T "$BENCH_DIR" | awk 'NR==2{print $2" ("$1")"}'); etcd $(etcd --version | awk 'NR==1{print $3}')"
exec cargo test --release --test cluster_bench -- --ignored --nocapture
