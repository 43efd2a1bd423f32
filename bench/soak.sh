#!/usr/bin/env bash
# bench/soak.sh: spoke under steady load while its surroundings churn, for a bounded time.
#
# Owns: finding the binary and a working directory, and making sure nothing outlives the run.
# The scenario, the sampling and the verdict are in soak.py beside this file; README.md
# describes them. Loopback only (ports SOAK_PORT_BASE+1 … +13).
#
# Usage: bench/soak.sh [--duration SECONDS] [--keep] [soak.py run options…]
#        (default 600 s; --keep leaves the working directory with logs and raw samples)
# Env:   SPOKE_BIN (default $CARGO_TARGET_DIR/release/spoke, else /var/tmp/spoke-target/…),
#        SOAK_PORT_BASE (0: a free range is picked).
# Exit:  0 if memory, fds and threads stay flat and no avoidable request failed; 1 if not.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SPOKE_BIN=${SPOKE_BIN:-${CARGO_TARGET_DIR:-/var/tmp/spoke-target}/release/spoke}
KEEP=0
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
command -v python3 >/dev/null || { echo "soak.sh: python3 is required" >&2; exit 2; }
[ -x "$SPOKE_BIN" ] || { echo "soak.sh: no spoke binary at $SPOKE_BIN (set SPOKE_BIN)" >&2; exit 2; }

RUN=$(mktemp -d /tmp/spoke-soak.XXXXXX)
PY=""
cleanup() {
  # soak.py kills what it started (by PID) on its way out; this covers soak.py itself.
  if [ -n "$PY" ] && kill -0 "$PY" 2>/dev/null; then
    kill -TERM "$PY" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PY" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PY" 2>/dev/null || true
  fi
  if [ "$KEEP" = 1 ]; then echo "soak.sh: kept $RUN" >&2; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

python3 "$HERE/soak.py" run --spoke "$SPOKE_BIN" --dir "$RUN" \
  --port-base "${SOAK_PORT_BASE:-0}" ${ARGS[@]+"${ARGS[@]}"} &
PY=$!
rc=0
wait "$PY" || rc=$?
PY=""
exit "$rc"
