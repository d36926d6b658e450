#!/usr/bin/env bash
# Loader coverage on a directory of real Compose files: runs `skiff stack config` on
# every Compose file under DIR (names like docker-compose*.yml, compose*.yaml,
# *.compose.yml), each alone, and prints `N files, K loaded, F failed` and the first
# line of each failure. Needs no agent. SKIFF (default: the debug build) picks the
# binary; with -v every failure's whole error is printed.
# Usage: deploy/bench/compose-corpus.sh [-v] DIR
set -euo pipefail
verbose=0
if [ "${1:-}" = -v ]; then verbose=1; shift; fi
dir=${1:?usage: compose-corpus.sh [-v] DIR}
root=$(cd "$(dirname "$0")/../.." && pwd)
B=${SKIFF:-${CARGO_TARGET_DIR:-$root/target}/debug/skiff}
[ -x "$B" ] || { echo "no skiff binary at $B (cargo build, or set SKIFF)" >&2; exit 2; }
n=0 k=0 f=0
failures=$(mktemp)
trap 'rm -f "$failures"' EXIT
while IFS= read -r -d '' file; do
  n=$((n + 1))
  # A fixed environment: no variable of the caller's changes what a file means.
  if err=$(cd "$(dirname "$file")" && env -i PATH="$PATH" HOME=/nonexistent \
    "$B" -H unix:///nonexistent/skiff.sock stack config -c "$file" 2>&1 >/dev/null); then
    k=$((k + 1))
  else
    f=$((f + 1))
    if [ "$verbose" = 1 ]; then
      printf '%s\n%s\n\n' "$file" "$err" >>"$failures"
    else
      printf '%s: %s\n' "$file" "$(printf '%s\n' "$err" | grep -v '^\s*$' | head -n1)" >>"$failures"
    fi
  fi
done < <(find "$dir" -type f \( -iname '*compose*.yml' -o -iname '*compose*.yaml' \) \
  -not -path '*/node_modules/*' -print0 | sort -z)
echo "$n files, $k loaded, $f failed"
cat "$failures"
