#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh) and runs the whole test suite:
# formatting, clippy, unit and thread-level integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
rustup component add rustfmt clippy >/dev/null 2>&1 || true
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all -- --check; fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --release --all-targets -- -D warnings
fi
bash scripts/no-runtime.sh
cargo test --release --all-targets
