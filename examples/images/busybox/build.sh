#!/usr/bin/env bash
# Makes the busybox base image every example and test uses, from Debian's
# busybox-static package (no image registry is reachable from these machines).
#
#   examples/images/busybox/build.sh [OUT.tar]      # writes a rootfs tarball
#   skiff image import OUT.tar busybox:latest -c 'CMD ["sh"]'
#
# The rootfs holds /bin/busybox with one symlink per applet, a minimal /etc
# (passwd, group, nsswitch), and the usual empty directories.
set -euo pipefail
out=${1:-busybox-rootfs.tar}
bb=$(command -v busybox || true)
if [ -z "$bb" ] || ! file -L "$bb" 2>/dev/null | grep -q 'statically linked'; then
  bb=/bin/busybox
fi
if [ ! -x "$bb" ]; then
  echo "busybox-static is not installed: apt-get install -y busybox-static" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
r=$work/rootfs
mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,var/www,var/log,home,proc,sys,dev,run}
chmod 1777 "$r/tmp"
cp "$bb" "$r/bin/busybox"
for applet in $("$r/bin/busybox" --list-full); do
  [ "$applet" = bin/busybox ] && continue
  mkdir -p "$r/$(dirname "$applet")"
  ln -sf /bin/busybox "$r/$applet"
done
cat > "$r/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$r/etc/group" <<'G'
root:x:0:
daemon:x:1:
tty:x:5:
www-data:x:33:
users:x:100:
nogroup:x:65534:
G
echo 'hosts: files dns' > "$r/etc/nsswitch.conf"
echo '<h1>Hello from Skiff</h1>' > "$r/var/www/index.html"
tar --numeric-owner --owner=0 --group=0 -C "$r" -cf "$out" .
echo "$out"
