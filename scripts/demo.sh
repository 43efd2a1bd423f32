#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh) and runs `spoke demo`: the
# embedded controller serving examples/mesh.yaml, the proxy, two backends and
# a burst of traffic, then a per-route report from spoke's own /metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo run --release --bin spoke -- demo "$@"
