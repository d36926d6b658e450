#!/usr/bin/env bash
# Builds the guest image deploy/vm-cluster boots, from Debian's archive (no disk image is
# downloaded): a bookworm root file system made with mmdebstrap holding systemd,
# cloud-init, openssh-server, the kernel and the packages deploy/install.sh and the
# cloud-init user data ask for, as a raw ext4 image plus the kernel and initramfs to boot
# it directly (no boot loader: faster, and nothing to install on the image's disk).
#
#   deploy/vm/build-image.sh CACHE_DIR     writes CACHE_DIR/{rootfs.raw,vmlinuz,initrd.img}
#
# Offline by design: the image has no apt sources, so the user data's `package_update`
# and `packages` succeed with what is installed (the VMs reach nothing outside their
# namespace). Services the cluster does not need are disabled to keep boots short; the
# image has no locales (cloud-init is told C.UTF-8) and makes one ssh host key type.
# The examples' busybox image is prebuilt into /usr/local/share/skiff/busybox.tar (with
# examples/images/busybox/build.sh, in the image): provision.sh imports it from there
# instead of building it at first boot, which takes minutes under emulation.
set -euo pipefail
out=${1:?usage: build-image.sh CACHE_DIR}
[ "$(id -u)" = 0 ] || { echo "build-image.sh: run as root" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "build-image.sh: mmdebstrap is not installed (apt-get install mmdebstrap)" >&2; exit 1; }
examples=$(cd "$(dirname "$0")/../.." && pwd)/examples
mkdir -p "$out"
work=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

pkgs=(
  systemd systemd-sysv udev dbus linux-image-amd64 initramfs-tools
  cloud-init openssh-server
  # deploy/install.sh's runtime packages and the user data's package list
  nftables iproute2 util-linux libseccomp2 procps ca-certificates git curl
  # the examples' busybox image (examples/images/busybox/build.sh) and the tests' probes
  busybox-static file
)
mmdebstrap --variant=minbase --include="$(IFS=,; echo "${pkgs[*]}")" \
  --customize-hook='echo "/dev/vda / ext4 rw,relatime 0 1" > "$1/etc/fstab"' \
  --customize-hook='rm -f "$1/etc/apt/sources.list" "$1"/etc/apt/sources.list.d/*' \
  --customize-hook='printf "%s\n" "datasource_list: [NoCloud, None]" "locale: C.UTF-8" "ssh_genkeytypes: [ed25519]" > "$1/etc/cloud/cloud.cfg.d/90-skiff-vm.cfg"' \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd.service' \
  --customize-hook='for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer dpkg-db-backup.timer getty@tty1.service; do chroot "$1" systemctl disable $u 2>/dev/null || true; chroot "$1" systemctl mask $u >/dev/null 2>&1 || true; done' \
  --customize-hook='rm -f "$1/etc/machine-id"; touch "$1/etc/machine-id"; rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook="mkdir -p \"\$1/usr/local/share/skiff\" && cp '$examples/images/busybox/build.sh' \"\$1/tmp/busybox-build.sh\" && chroot \"\$1\" bash /tmp/busybox-build.sh /usr/local/share/skiff/busybox.tar >/dev/null && rm \"\$1/tmp/busybox-build.sh\"" \
  --customize-hook='cp -L "$1/vmlinuz" "$1/../vmlinuz"; cp -L "$1/initrd.img" "$1/../initrd.img"' \
  bookworm "$work/rootfs" http://deb.debian.org/debian
# A raw ext4 file system (no partition table: the kernel mounts /dev/vda) with room for
# the binary, images and containers; sparse, so it costs only what it holds.
mkfs.ext4 -q -F -L skiff-root -d "$work/rootfs" "$work/rootfs.raw" 3G
mv "$work/vmlinuz" "$work/initrd.img" "$work/rootfs.raw" "$out/"
echo "build-image.sh: $out/rootfs.raw ($(du -h --apparent-size "$out/rootfs.raw" | cut -f1), $(du -h "$out/rootfs.raw" | cut -f1) used)"
