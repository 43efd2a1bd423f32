#!/usr/bin/env bash
# Fails when an async runtime or executor crate, or a tokio feature that
# brings one, is in spoke's dependency tree. tokio is allowed only as the
# provider of the AsyncRead/AsyncWrite traits h2 needs (DESIGN.md).
set -euo pipefail
cd "$(dirname "$0")/.."
features=$(cargo tree -e features -i tokio --prefix none 2>/dev/null | grep -o 'tokio feature "[a-z-]*"' | sort -u || true)
for f in rt rt-multi-thread net time macros process signal fs; do
  if grep -qx "tokio feature \"$f\"" <<<"$features"; then
    echo "no-runtime: tokio feature \"$f\" is enabled:" >&2
    cargo tree -e features -i tokio >&2
    exit 1
  fi
done
for c in async-std smol async-executor tokio-executor; do
  if cargo tree --prefix none -e normal 2>/dev/null | grep -q "^$c v"; then
    echo "no-runtime: $c is in the dependency tree" >&2
    exit 1
  fi
done
echo "no-runtime: tokio features: $(tr '\n' ' ' <<<"$features")"
