#!/usr/bin/env bash
# The main job, from a fresh Debian machine (as root): build Skiff, start an agent,
# build the busybox example image, run the example web server published on a port,
# and show it answering.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (the agent creates namespaces, mounts and cgroups)" >&2; exit 1; }
deploy/deps.sh
echo "==> building"
cargo build --release --quiet
install -m 0755 target/release/skiff /usr/local/bin/skiff
export SKIFF_HOST=unix:///run/skiff/skiff.sock
if ! skiff version >/dev/null 2>&1; then
  echo "==> starting the agent (log: /var/log/skiff-agent.log)"
  nohup skiff agent >>/var/log/skiff-agent.log 2>&1 &
  for _ in $(seq 100); do skiff version >/dev/null 2>&1 && break; sleep 0.1; done
fi
echo "==> building the busybox image from busybox-static"
examples/images/busybox/build.sh /tmp/skiff-busybox.tar >/dev/null
skiff image import /tmp/skiff-busybox.tar busybox:latest -c 'CMD ["sh"]' >/dev/null
skiff images
echo "==> running the example web server"
skiff rm -f hello-web >/dev/null 2>&1 || true
skiff run -d --name hello-web --network host busybox httpd -f -p 8080 -h /var/www
skiff ps
for _ in $(seq 50); do curl -fsS http://127.0.0.1:8080/ >/dev/null 2>&1 && break; sleep 0.1; done
echo "==> curl http://127.0.0.1:8080/"
curl -fsS http://127.0.0.1:8080/
echo "The agent keeps running; stop the example with: skiff rm -f hello-web"
