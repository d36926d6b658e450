#!/usr/bin/env bash
# Vagrant provisioner, run as root in each VM of deploy/vagrant/Vagrantfile:
#   provision.sh manager IP          build (or reuse) skiff and skiff-shim, install them as a
#                                    manager on IP, publish the binaries and the worker token
#                                    in .cluster/
#   provision.sh worker IP MANAGER   install those binaries and join MANAGER:2377 with that token
# Both run deploy/vm/provision.sh, the script the cloud-init user data and deploy/vm-cluster
# run too (install.sh, the join tokens, the examples' busybox image).
# Idempotent, like deploy/install.sh: `vagrant provision` again changes nothing.
set -euo pipefail
role="${1:?role: manager or worker}" ip="${2:?the address of this VM}" manager="${3:-}"
src=/skiff
shared="$src/deploy/vagrant/.cluster"
mkdir -p "$shared"

wait_for() { # wait_for FILE WHAT: the manager publishes FILE when it is ready
  for _ in $(seq 600); do [ -s "$1" ] && return 0; sleep 1; done
  echo "provision: no $2 in $1 after 10 minutes: is the manager up? (vagrant up manager)" >&2
  exit 1
}

case "$role" in
manager)
  if [ -x "$src/target/release/skiff" ] && [ -x "$src/target/release/skiff-shim" ] &&
    "$src/target/release/skiff" --version >/dev/null 2>&1; then
    # Built on a Linux x86_64 host: use them as they are (the shim first: workers wait
    # for skiff).
    install -m 0755 "$src/target/release/skiff-shim" "$shared/skiff-shim"
    install -m 0755 "$src/target/release/skiff" "$shared/skiff"
  elif [ ! -x "$shared/skiff" ] || [ ! -x "$shared/skiff-shim" ]; then
    echo "==> building skiff in the manager VM (first time only: several minutes)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq build-essential curl pkg-config libseccomp-dev >/dev/null
    if ! command -v cargo >/dev/null && [ ! -x /root/.cargo/bin/cargo ]; then
      curl -fsSL https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
    fi
    export PATH="/root/.cargo/bin:$PATH"
    (cd "$src" && CARGO_TARGET_DIR=/var/tmp/skiff-target cargo build --release --quiet --bin skiff --bin skiff-shim)
    install -m 0755 /var/tmp/skiff-target/release/skiff-shim "$shared/skiff-shim"
    install -m 0755 /var/tmp/skiff-target/release/skiff "$shared/skiff"
  fi
  "$src/deploy/vm/provision.sh" manager --bin "$shared/skiff" --addr "$ip"
  install -m 0600 /root/skiff-worker.token "$shared/worker.token.new"
  mv "$shared/worker.token.new" "$shared/worker.token"
  echo "==> manager ready; workers join with the token in deploy/vagrant/.cluster/worker.token"
  ;;
worker)
  [ -n "$manager" ] || { echo "provision: worker needs the manager's address" >&2; exit 1; }
  wait_for "$shared/skiff" "binary"
  wait_for "$shared/skiff-shim" "shim binary"
  wait_for "$shared/worker.token" "join token"
  "$src/deploy/vm/provision.sh" worker --bin "$shared/skiff" --addr "$ip" \
    --join "$manager:2377" --token "$(cat "$shared/worker.token")"
  ;;
*)
  echo "provision: unknown role $role (manager or worker)" >&2
  exit 1
  ;;
esac
