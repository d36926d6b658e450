#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine (as root): installs what it needs,
# checks formatting and lints, then runs unit and end-to-end tests (which drive the
# real binary on the real kernel and clean up after themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: end-to-end tests create namespaces, mounts and cgroups" >&2; exit 1; }
deploy/deps.sh --test
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> supply chain (cargo deny, offline RustSec snapshot)"
deploy/audit.sh
echo "==> cargo test"
cargo test --workspace --quiet -- --test-threads "${SKIFF_TEST_THREADS:-4}"
echo "all tests passed"
