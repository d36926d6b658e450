#!/usr/bin/env bash
# The main job, from a fresh Debian machine (as root): build Skiff, start an agent,
# build the busybox example image, deploy the example stack (a replicated web tier
# behind a published port, an api service it calls by name, a named volume) on the
# embedded one-node cluster, and show it answering.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (the agent creates namespaces, mounts and cgroups)" >&2; exit 1; }
deploy/deps.sh
echo "==> building"
cargo build --release --quiet
# skiff-shim, the per-container shim, goes beside skiff: the agent runs it from there.
install -m 0755 "${CARGO_TARGET_DIR:-target}/release/skiff-shim" /usr/local/bin/skiff-shim
install -m 0755 "${CARGO_TARGET_DIR:-target}/release/skiff" /usr/local/bin/skiff
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
echo "==> deploying the example stack (examples/hello/app.yaml) on the embedded one-node cluster"
skiff stack deploy -c examples/hello/app.yaml --detach=false --timeout 2m hello
skiff stack services hello
skiff stack ps hello
for _ in $(seq 50); do curl -fsS http://127.0.0.1:8080/ >/dev/null 2>&1 && break; sleep 0.2; done
echo "==> curl http://127.0.0.1:8080/  (three web replicas behind one published port)"
for _ in 1 2 3; do curl -fsS http://127.0.0.1:8080/; done
echo "==> curl http://127.0.0.1:8080/cgi-bin/api  (web calls the api service by name)"
api=$(curl -fsS http://127.0.0.1:8080/cgi-bin/api)
echo "$api"
case $api in
  "hello from api "*) ;;
  *) echo "error: expected the api service's answer through web" >&2; exit 1 ;;
esac
echo "The agent keeps running; remove the stack with: skiff stack rm hello"
