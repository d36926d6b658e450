#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Skiff needs to build and run; with --test, also the
# test peers (docker-registry, apache2-utils, docker.io, runc, iperf3: registry tests,
# Docker interop and firewall-coexistence tests start private instances of them;
# prometheus: the metrics test scrapes an agent with a private Prometheus server;
# man-db renders the generated man pages, systemd's systemd-analyze verifies the unit
# deploy/install.sh writes; e2fsprogs and util-linux: the chaos test's loop-mounted roots,
# setpriv for the socket permission test; etcd-server: the controller benchmark's peer;
# openssh-server/-client: the ssh:// remote test runs a private sshd on loopback; jq:
# the engine benchmark copies skiff's seccomp profile into a runc bundle;
# cloud-init and vagrant validate the user data and Vagrantfile offline; with --vm (or
# --test --vm), qemu-system-x86, qemu-utils, mmdebstrap, genisoimage for deploy/vm-cluster
# (the opt-in VM test, tests/vm_cluster.rs);
# docker-compose (Debian's 1.29, on Debian's Python docker SDK) and the Python docker SDK
# and websocket-client from PyPI: the Docker API tests drive them against the agent's
# docker socket; tini provides /usr/bin/tini-static, the init `run --init` mounts).
# Idempotent; used by quickstart.sh and test.sh.
set -euo pipefail
pkgs=(busybox-static nftables iproute2 libseccomp-dev pkg-config curl procps file tini)
norec=()
test=false vm=false
for a in "$@"; do
  case $a in
    --test) test=true ;;
    --vm) vm=true ;;
    *) echo "usage: deploy/deps.sh [--test] [--vm]" >&2; exit 2 ;;
  esac
done
if $test; then
  pkgs+=(jq runc iperf3 docker-registry apache2-utils docker.io docker-compose man-db systemd e2fsprogs util-linux etcd-server)
  # Without its recommended node exporter: the test runs its own server only.
  norec=(prometheus openssh-server openssh-client cloud-init vagrant)
fi
if $vm; then
  norec+=(qemu-system-x86 mmdebstrap genisoimage)
fi
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
missing=()
for p in "${norec[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq || true
  extra=()
  # qemu-system-x86 needs the qemu-utils of its own release; a backported qemu-utils
  # (newer, without a matching emulator) is replaced by the release's.
  if $vm; then extra=(--allow-downgrades "qemu-utils/$(. /etc/os-release && echo "$VERSION_CODENAME")"); fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${extra[@]}" "${missing[@]}" >/dev/null
fi
if $test && ! python3 -c 'import docker, sys; sys.exit(int(docker.__version__.split(".")[0]) < 7)' 2>/dev/null; then
  echo "installing: the Python docker SDK (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check 'docker>=7,<8'
fi
if $test && ! python3 -c 'import websocket' 2>/dev/null; then
  echo "installing: websocket-client (PyPI), the Docker API's attach/ws test client"
  python3 -m pip install --quiet --disable-pip-version-check 'websocket-client>=1,<2'
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install a Rust toolchain (https://rustup.rs), then re-run" >&2
  exit 1
fi
