#!/usr/bin/env bash
# Supply-chain checks: `cargo deny` (advisories, bans, licenses, sources) against the
# offline RustSec snapshot in ../shared/advisory-db, never fetching. Fails when the
# snapshot is missing rather than passing silently. Installs cargo-deny (pinned) from
# crates.io when absent. Part of deploy/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
DENY_VERSION=0.20.2
snapshot=${SKIFF_ADVISORY_DB:-../shared/advisory-db}
if [ ! -d "$snapshot/crates" ]; then
  echo "audit: no RustSec advisory snapshot at $snapshot (set SKIFF_ADVISORY_DB): refusing to pass without one" >&2
  exit 1
fi
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $DENY_VERSION"; then
  echo "installing: cargo-deny $DENY_VERSION (crates.io)"
  cargo install --quiet --locked cargo-deny --version "$DENY_VERSION"
fi
# cargo-deny reads a database as a git checkout named after its URL's hash (the default
# RustSec URL gives advisory-db-3157b0e258782691) and takes its date from the commit.
about=$(dirname "$snapshot")/advisory-db.md
commit=$(grep -o 'commit [0-9a-f]\{40\}' "$about" 2>/dev/null | head -1 | cut -d' ' -f2 || true)
date=$(grep -o '[0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\}' "$about" 2>/dev/null | head -1 || true)
db=target/advisory-dbs/advisory-db-3157b0e258782691
stamp="$commit $date $(find "$snapshot" -type f | wc -l)"
if [ ! -f "$db/.snapshot" ] || [ "$(cat "$db/.snapshot")" != "$stamp" ]; then
  rm -rf "$db"
  mkdir -p "$db"
  cp -r "$snapshot/." "$db/"
  (
    cd "$db"
    git init -q
    git add -A
    d="${date:-1970-01-01}T00:00:00Z"
    GIT_AUTHOR_DATE=$d GIT_COMMITTER_DATE=$d git -c user.name=snapshot -c user.email=snapshot@localhost \
      commit -qm "RustSec advisory-db snapshot ${commit:-unknown}"
  )
  echo "$stamp" >"$db/.snapshot"
fi
echo "advisory database: RustSec snapshot ${commit:-(commit unknown)} of ${date:-(date unknown)} ($snapshot)"
# Every platform's crates must be present for --offline metadata.
cargo fetch --locked --quiet
cargo deny --offline --log-level error check advisories bans licenses sources
echo "supply chain: ok"
