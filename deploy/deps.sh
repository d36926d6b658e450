#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Skiff needs to build, run and test (docker-registry,
# apache2-utils and docker.io are test peers: registry tests, Docker interop and
# firewall-coexistence tests start their own private instances).
# Idempotent; used by quickstart.sh and test.sh.
set -euo pipefail
pkgs=(busybox-static nftables iproute2 libseccomp-dev pkg-config curl procps file runc iperf3 docker-registry apache2-utils docker.io)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || true
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install a Rust toolchain (https://rustup.rs), then re-run" >&2
  exit 1
fi
