#!/usr/bin/env bash
# Installs Skiff on a Debian/Ubuntu host, as root: the binaries (skiff, and skiff-shim
# beside it: the per-container shim), the runtime packages,
# /etc/skiff/agent.yaml (only if absent), a systemd unit for `skiff agent`, shell
# completions and man pages; enables and starts the agent where systemd runs, and
# prints the next command to run. Idempotent: a second run changes nothing and says so;
# a run with a new binary upgrades it and restarts the agent (containers keep running).
#
#   deploy/install.sh                                  # build from this checkout, one-node cluster
#   deploy/install.sh --listen-addr 10.0.0.10          # first manager, reachable by other nodes
#   deploy/install.sh --join 10.0.0.10:2377 --token SWMTKN-1-...   # a worker (or manager)
#   deploy/install.sh --bin ./skiff --destdir /tmp/stage --no-packages   # staging / tests
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: deploy/install.sh [OPTIONS]

  --bin PATH             install this skiff binary (default: cargo build --release here)
  --shim PATH            install this skiff-shim binary (default: skiff-shim beside --bin)
  --listen-addr IP[:P]   open the cluster port (2377) on IP: a manager other nodes can join
  --advertise-addr IP    address other nodes use to reach this one (default: listen addr)
  --join ADDR[:PORT]     join the cluster of the manager at ADDR (needs --token)
  --token TOKEN          join token, from `skiff cluster join-token -q worker` on a manager
  --prefix DIR           where bin/ and share/ go (default /usr/local)
  --destdir DIR          install under DIR (staging, like DESTDIR); implies --no-start
  --no-packages          do not apt-get install the runtime packages
  --no-start             do not enable or (re)start the systemd unit
  -h, --help             this text
EOF
}

die() { echo "install.sh: $*" >&2; exit 1; }

BIN="" SHIM="" DESTDIR="" PREFIX=/usr/local PACKAGES=1 START=1
LISTEN="" ADVERTISE="" JOIN="" TOKEN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="${2:?--bin needs a path}"; shift 2 ;;
    --shim) SHIM="${2:?--shim needs a path}"; shift 2 ;;
    --destdir) DESTDIR="${2:?--destdir needs a directory}"; START=0; shift 2 ;;
    --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
    --listen-addr) LISTEN="${2:?--listen-addr needs an address}"; shift 2 ;;
    --advertise-addr) ADVERTISE="${2:?--advertise-addr needs an address}"; shift 2 ;;
    --join) JOIN="${2:?--join needs ADDR[:PORT]}"; shift 2 ;;
    --token) TOKEN="${2:?--token needs a token}"; shift 2 ;;
    --no-packages) PACKAGES=0; shift ;;
    --no-start) START=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done
[ -z "$JOIN" ] || [ -n "$TOKEN" ] || die "--join needs --token (on a manager: skiff cluster join-token -q worker)"
[ -n "$JOIN" ] || [ -z "$TOKEN" ] || die "--token is only used with --join"
if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
  die "run as root (or stage with --destdir DIR)"
fi
case "$PREFIX" in /*) ;; *) die "--prefix must be absolute" ;; esac
if [ -n "$DESTDIR" ]; then
  mkdir -p "$DESTDIR"
  DESTDIR="$(cd "$DESTDIR" && pwd)"
fi

CHECKOUT="$(cd "$(dirname "$0")/.." && pwd)"
BIN_PATH="$PREFIX/bin/skiff"               # paths as the running system sees them
SHIM_PATH="$PREFIX/bin/skiff-shim"         # the agent runs the skiff-shim beside it
CONFIG=/etc/skiff/agent.yaml
UNIT=/etc/systemd/system/skiff.service
MAN_DIR="$PREFIX/share/man/man1"
CHANGED=0
BINARY_CHANGED=0 UNIT_CHANGED=0

say() { echo "==> $*"; }
changed() { echo "  $1"; CHANGED=$((CHANGED + 1)); }

# install_file SRC DEST MODE: copies when the content or mode differs (atomically: a
# temporary file renamed over DEST, so a running binary is never written in place).
install_file() {
  local src="$1" dest="$DESTDIR$2" mode="$3"
  if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "$mode" ]; then
    echo "  unchanged $2"
    return 1
  fi
  mkdir -p "$(dirname "$dest")"
  install -m "$mode" "$src" "$dest.skiff-new"
  mv -f "$dest.skiff-new" "$dest"
  changed "installed $2"
}

# ---------------------------------------------------------------- packages
RUNTIME_PKGS=(nftables iproute2 util-linux libseccomp2 procps ca-certificates)
if [ "$PACKAGES" = 1 ]; then
  say "runtime packages: ${RUNTIME_PKGS[*]}"
  command -v dpkg >/dev/null || die "not a Debian/Ubuntu host (no dpkg); install ${RUNTIME_PKGS[*]} yourself and pass --no-packages"
  missing=()
  for p in "${RUNTIME_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || true
    apt-get install -y -qq "${missing[@]}" >/dev/null
    changed "installed packages: ${missing[*]}"
  else
    echo "  unchanged (all present)"
  fi
fi

# ---------------------------------------------------------------- binaries
if [ -z "$BIN" ]; then
  say "building skiff and skiff-shim (cargo build --release) in $CHECKOUT"
  [ "$PACKAGES" = 0 ] || "$CHECKOUT/deploy/deps.sh"
  command -v cargo >/dev/null || die "cargo is not installed: pass --bin PATH or install a Rust toolchain"
  (cd "$CHECKOUT" && cargo build --release --quiet --bin skiff --bin skiff-shim)
  BIN="${CARGO_TARGET_DIR:-$CHECKOUT/target}/release/skiff"
fi
SHIM="${SHIM:-$(dirname "$BIN")/skiff-shim}"
[ -x "$BIN" ] || die "$BIN is not an executable"
"$BIN" --version >/dev/null 2>&1 || die "$BIN does not run here (wrong architecture?)"
# Both or neither: an agent beside a skiff-shim of another build would run it.
[ -x "$SHIM" ] || die "$SHIM is not an executable: skiff-shim (the per-container shim, built with skiff) is installed beside skiff; pass --shim PATH"
"$SHIM" --help >/dev/null 2>&1 || die "$SHIM does not run here (wrong architecture?)"
say "binaries $("$BIN" --version), skiff-shim"
# The shim first: an agent started from the new skiff finds the new shim beside it.
if install_file "$SHIM" "$SHIM_PATH" 755; then BINARY_CHANGED=1; fi
if install_file "$BIN" "$BIN_PATH" 755; then BINARY_CHANGED=1; fi
SKIFF="$DESTDIR$BIN_PATH"

# ---------------------------------------------------------------- agent.yaml
say "configuration $CONFIG"
if [ -e "$DESTDIR$CONFIG" ]; then
  echo "  unchanged $CONFIG (exists; never overwritten)"
  for kv in "listen_addr:$LISTEN" "advertise_addr:$ADVERTISE" "join:$JOIN" "join_token:$TOKEN"; do
    k="${kv%%:*}" v="${kv#*:}"
    if [ -n "$v" ] && ! grep -qxF "$k: $v" "$DESTDIR$CONFIG"; then
      [ "$k" != join_token ] || v="(the token given)"
      echo "  note: $k $v not applied: $CONFIG exists; edit its $k key" >&2
    fi
  done
else
  mkdir -p "$DESTDIR/etc/skiff"
  chmod 0755 "$DESTDIR/etc/skiff"
  opt() { if [ -n "$2" ]; then echo "$1: $2"; else echo "# $1: $3"; fi; }
  umask 077
  {
    echo "# skiff agent configuration, written by deploy/install.sh; never overwritten by it."
    echo "# Flags of \`skiff agent\` take precedence. Restart the agent after editing:"
    echo "#   systemctl restart skiff   (running containers are not affected)"
    echo "root: /var/lib/skiff"
    echo "exec_root: /run/skiff"
    echo "host: unix:///run/skiff/skiff.sock"
    echo "log_level: info              # error, warn, info, debug, trace"
    echo "log_format: text             # or json"
    echo "# Container log rotation (json-file); \`skiff run --log-opt KEY=VALUE\` overrides."
    echo "log_opts:"
    echo "  max-size: 10m"
    echo "  max-file: 3"
    echo "# Cluster: a manager opens the cluster port on listen_addr; a new node joins one."
    opt listen_addr "$LISTEN" "10.0.0.10          # IP[:PORT], port 2377 if omitted"
    opt advertise_addr "$ADVERTISE" "10.0.0.10"
    opt join "$JOIN" "10.0.0.10:2377"
    opt join_token "$TOKEN" "SWMTKN-1-...        # skiff cluster join-token -q worker (on a manager)"
    echo "# dns: [1.1.1.1]"
    echo "# default_address_pools: [{base: 172.30.0.0/16, size: 24}]"
  } >"$DESTDIR$CONFIG.skiff-new"
  umask 022
  chmod 0600 "$DESTDIR$CONFIG.skiff-new"
  mv "$DESTDIR$CONFIG.skiff-new" "$DESTDIR$CONFIG"
  changed "wrote $CONFIG (0600)"
fi

# ---------------------------------------------------------------- systemd unit
say "systemd unit $UNIT"
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
cat >"$tmp" <<EOF
# Installed by skiff's deploy/install.sh (rewritten by it: put changes in a drop-in,
# systemctl edit skiff).
[Unit]
Description=Skiff agent: container engine and orchestrator
Documentation=man:skiff-agent(1)
After=network-online.target nftables.service
Wants=network-online.target

[Service]
Type=exec
ExecStart=$BIN_PATH agent --config $CONFIG
# Containers survive a stop, restart or upgrade of the agent: each runs under its own
# shim process, which must not be killed with the agent.
KillMode=process
# Containers' cgroups are the agent's to manage.
Delegate=yes
# The kernel's OOM killer reaches containers before the agent.
OOMScoreAdjust=-500
Restart=always
RestartSec=2
# Shims (one per container) stay in this unit's cgroup.
TasksMax=infinity
LimitNPROC=infinity
LimitCORE=infinity

[Install]
WantedBy=multi-user.target
EOF
if install_file "$tmp" "$UNIT" 644; then UNIT_CHANGED=1; fi

# ---------------------------------------------------------------- completions, man pages
say "shell completions and man pages"
gen="$(mktemp -d)"
trap 'rm -f "$tmp"; rm -rf "$gen"' EXIT
"$SKIFF" completion bash >"$gen/skiff.bash"
"$SKIFF" completion zsh >"$gen/_skiff"
"$SKIFF" completion fish >"$gen/skiff.fish"
install_file "$gen/skiff.bash" /usr/share/bash-completion/completions/skiff 644 || true
install_file "$gen/_skiff" "$PREFIX/share/zsh/site-functions/_skiff" 644 || true
install_file "$gen/skiff.fish" /usr/share/fish/vendor_completions.d/skiff.fish 644 || true
"$SKIFF" man --dir "$gen/man" 2>/dev/null
# One diff and one install for all pages (not a process per page: slow machines and
# emulated VMs spend minutes on 120 pages otherwise).
mkdir -p "$DESTDIR$MAN_DIR"
pages=("$gen"/man/*.1)
man_total=${#pages[@]}
mapfile -t stale < <(diff -q "$gen/man" "$DESTDIR$MAN_DIR" 2>/dev/null |
  sed -n -e "s|^Files $gen/man/\([^ ]*\.1\) and .*|\1|p" -e "s|^Only in $gen/man: \(.*\.1\)\$|\1|p")
man_changed=${#stale[@]}
[ "$man_changed" = 0 ] || (cd "$gen/man" && install -m 644 -t "$DESTDIR$MAN_DIR" "${stale[@]}")
if [ "$man_changed" -gt 0 ]; then
  changed "installed $man_changed of $man_total man pages in $MAN_DIR"
else
  echo "  unchanged $man_total man pages in $MAN_DIR"
fi

# ---------------------------------------------------------------- start
START_HINT="systemctl start skiff"
say "agent service"
if [ "$START" = 0 ]; then
  echo "  not started (--no-start or --destdir)"
  START_HINT="systemctl daemon-reload && systemctl enable --now skiff"
elif [ -d /run/systemd/system ]; then
  [ "$UNIT_CHANGED" = 0 ] || systemctl daemon-reload
  if ! systemctl is-enabled --quiet skiff.service 2>/dev/null; then
    systemctl enable --quiet skiff.service
    changed "enabled skiff.service"
  fi
  if ! systemctl is-active --quiet skiff.service && "$SKIFF" version >/dev/null 2>&1; then
    echo "  an agent not run by systemd answers on the default socket: stop it (SIGTERM;" \
         "containers keep running), then: systemctl start skiff" >&2
  elif ! systemctl is-active --quiet skiff.service; then
    systemctl start skiff.service
    changed "started skiff.service"
  elif [ "$BINARY_CHANGED" = 1 ] || [ "$UNIT_CHANGED" = 1 ]; then
    # KillMode=process: only the agent restarts; containers keep running.
    systemctl restart skiff.service
    changed "restarted skiff.service (new binaries or unit; containers keep running)"
  else
    echo "  unchanged (enabled and running)"
  fi
  START_HINT=""
else
  echo "  systemd is not running here (PID 1 is $(ps -p 1 -o comm= 2>/dev/null || echo unknown)): start the agent by hand:"
  START_HINT="nohup $BIN_PATH agent --config $CONFIG >>/var/log/skiff-agent.log 2>&1 &"
  echo "    $START_HINT"
  if [ "$BINARY_CHANGED" = 1 ] && "$SKIFF" version >/dev/null 2>&1; then
    echo "  an agent is running: stop it with SIGTERM (containers keep running) and start it" \
         "again as above to run the new binary"
  fi
fi

# ---------------------------------------------------------------- summary
echo
if [ "$CHANGED" = 0 ]; then
  echo "Nothing to do: skiff is installed and up to date (no changes)."
else
  echo "Done: $CHANGED change(s)."
fi
echo
echo "Next:"
[ -z "$START_HINT" ] || echo "  $START_HINT"
if [ -n "$JOIN" ]; then
  echo "  # this node joins the cluster at $JOIN when the agent starts; on a manager:"
  echo "  skiff node ls"
elif [ -n "$LISTEN" ]; then
  addr="${ADVERTISE:-$LISTEN}"
  case "$addr" in *:*) ;; *) addr="$addr:2377" ;; esac
  echo "  skiff cluster join-token -q worker        # here: prints the worker token"
  echo "  deploy/install.sh --join $addr --token TOKEN   # then on each worker"
  echo "  skiff stack deploy -c examples/hello/app.yaml hello   # here, once they joined"
else
  echo "  skiff stack deploy -c examples/hello/app.yaml hello"
fi
