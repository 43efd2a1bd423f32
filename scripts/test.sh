#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh) and runs the whole test suite:
# formatting, clippy, unit and thread-level integration tests; then the TLS tests
# again with the aws-lc-rs crypto provider.
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

# The TLS tests again with the other crypto provider (Cargo.toml's
# `aws-lc-rs` feature), in the same target directory: the unit tests (those of
# the TLS stack and of identity: keys, CSR, the embedded CA; the rest come
# along, in one build), and the mTLS and control-plane TLS integration tests.
# Each build links only its own provider.
aws=(--no-default-features --features aws-lc-rs)
if cargo tree -e normal --prefix none | grep -q '^aws-lc-rs '; then
  echo "the default (ring) build pulls in aws-lc-rs" >&2
  exit 1
fi
if cargo tree -e normal --prefix none "${aws[@]}" | grep -q '^ring '; then
  echo "the aws-lc-rs build pulls in ring" >&2
  exit 1
fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --release --all-targets "${aws[@]}" -- -D warnings
fi
cargo test --release "${aws[@]}" --lib --test mtls --test ctltls
# That run left its own binary at target/release/spoke, where bench/ and the
# tests' CARGO_BIN_EXE_spoke look; put the default build's back (the main run
# built it, so this only copies; quiet, so the test results stay the last lines).
cargo build --release -q
