#!/usr/bin/env bash
# Provisions one Skiff node, as root, on a Debian/Ubuntu VM. The one script behind every
# VM path: the cloud-init user data (deploy/cloud-init/*.yaml), the Vagrantfile
# (deploy/vagrant/provision.sh) and the VM cluster the tests boot (deploy/vm-cluster).
#
#   provision.sh manager --bin BIN --addr IP [--join MANAGER[:2377] --token MANAGER-TOKEN]
#       installs BIN (and the skiff-shim beside it) with deploy/install.sh as a manager,
#       its cluster port on IP:2377: the first one (a new cluster), or with --join one
#       more manager of MANAGER's cluster;
#       writes the join tokens (0600) to /root/skiff-worker.token and
#       /root/skiff-manager.token
#   provision.sh worker --bin BIN --addr IP --join MANAGER[:2377] --token TOKEN
#       installs BIN (and the skiff-shim beside it) and joins the cluster at MANAGER as a
#       worker
#
# Then, on every node, imports the examples' busybox:latest image (built from Debian's
# busybox-static) unless it is there, so the README's example stack runs without a
# registry. Idempotent, like install.sh: a second run changes nothing.
set -euo pipefail
die() { echo "provision.sh: $*" >&2; exit 1; }
role=${1:-}; shift || true
bin="" addr="" join="" token=""
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bin=${2:?--bin needs a path}; shift 2 ;;
    --addr) addr=${2:?--addr needs an IP}; shift 2 ;;
    --join) join=${2:?--join needs MANAGER[:PORT]}; shift 2 ;;
    --token) token=${2:?--token needs a token}; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
src=$(cd "$(dirname "$0")/../.." && pwd)
[ -n "$bin" ] || die "--bin is required (the skiff binary to install, skiff-shim beside it)"
[ -n "$addr" ] || die "--addr is required (this node's private address)"
skiff=/usr/local/bin/skiff

[ -z "$join" ] || [ -n "$token" ] || die "--join needs --token"
case $join in '' | *:*) ;; *) join=$join:2377 ;; esac

case $role in
manager)
  if [ -n "$join" ]; then
    "$src/deploy/install.sh" --bin "$bin" --listen-addr "$addr" --join "$join" --token "$token"
  else
    "$src/deploy/install.sh" --bin "$bin" --listen-addr "$addr"
  fi
  for _ in $(seq 300); do "$skiff" cluster join-token -q worker >/dev/null 2>&1 && break; sleep 0.5; done
  (
    umask 077
    "$skiff" cluster join-token -q worker >/root/skiff-worker.token.new
    "$skiff" cluster join-token -q manager >/root/skiff-manager.token.new
  ) || die "the agent did not answer within 150 s: journalctl -u skiff"
  mv /root/skiff-worker.token.new /root/skiff-worker.token
  mv /root/skiff-manager.token.new /root/skiff-manager.token
  echo "==> manager ready on $addr:2377; worker token in /root/skiff-worker.token"
  ;;
worker)
  [ -n "$join" ] || die "worker needs --join MANAGER[:2377] and --token TOKEN"
  "$src/deploy/install.sh" --bin "$bin" --advertise-addr "$addr" --join "$join" --token "$token"
  ;;
*) die "usage: provision.sh manager|worker --bin BIN --addr IP [--join MANAGER --token TOKEN]" ;;
esac

for _ in $(seq 300); do "$skiff" version >/dev/null 2>&1 && break; sleep 0.5; done
"$skiff" version >/dev/null 2>&1 || die "the agent did not answer within 150 s: journalctl -u skiff"
if ! "$skiff" image inspect busybox:latest >/dev/null 2>&1; then
  # deploy/vm/build-image.sh prebuilds it with the same script.
  prebuilt=/usr/local/share/skiff/busybox.tar
  if [ -f "$prebuilt" ]; then
    tar=$prebuilt
  else
    if ! [ -x /bin/busybox ] || ! command -v file >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static file >/dev/null
    fi
    tar=$(mktemp --suffix=.tar)
    "$src/examples/images/busybox/build.sh" "$tar" >/dev/null
  fi
  "$skiff" image import "$tar" busybox:latest -c 'CMD ["sh"]' >/dev/null
  [ "$tar" = "$prebuilt" ] || rm -f "$tar"
  echo "==> imported busybox:latest (examples/images/busybox/build.sh)"
fi
