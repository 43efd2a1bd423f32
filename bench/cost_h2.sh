#!/usr/bin/env bash
# bench/cost_h2.sh: instructions per request on spoke's event loop for HTTP/2 (h2c on both
# sides), the deterministic counterpart of h2.sh's CPU µs per request: a host that steals
# time changes h2.sh's figures run to run, not these.
#
# Runs spoke under callgrind (per-thread counts) twice, with N1 and N2 requests from h2load
# (CONNS connections of STREAMS concurrent streams) through its outbound port to an nginx h2c
# backend answering a fixed 200; the event-loop thread's instructions per request are the
# difference divided by N2 - N1, which cancels start-up and discovery. How many streams each
# poll carries depends a little on timing, so figures move by about ±1% between runs.
# h2.sh's own shape is CONNS=8 STREAMS=100 (N1=4000 N2=24000 then, to stay past start-up).
# The figure is followed by whose code runs it: instructions per request by crate
# (cg_crates.py), so what spoke can change and what is h2's own shows in every run.
#
# COST_TARGET=haproxy counts haproxy instead (one thread, `proto h2` both sides, as in
# h2.sh): the same two runs, its one thread's instructions, the same backend and client.
#
# Usage: bench/cost_h2.sh   (SPOKE_BIN, N1=2000, N2=12000, CONNS=1, STREAMS=10,
#                            COST_TARGET=spoke|haproxy, COST_PORT_BASE=18650)
# Needs valgrind, nginx with HTTP/2, h2load (Debian nghttp2-client), python3: installed with
# apt-get when missing. Loopback only; every process it starts is stopped by PID on exit.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
SPOKE_BIN=${SPOKE_BIN:-${CARGO_TARGET_DIR:-/var/tmp/spoke-target}/release/spoke}
TARGET=${COST_TARGET:-spoke}
N1=${N1:-2000}
N2=${N2:-12000}
STREAMS=${STREAMS:-10}
CONNS=${CONNS:-1}
BASE=${COST_PORT_BASE:-18650}
BACKEND_PORT=$((BASE + 1)) OUT_PORT=$((BASE + 2)) ADMIN_PORT=$((BASE + 3)) IN_PORT=$((BASE + 4))
HAPROXY_PORT=$((BASE + 5))
URI=http://books.default.svc.cluster.local:7000/r/x

case "$TARGET" in
  spoke) [ -x "$SPOKE_BIN" ] || die "no spoke binary at $SPOKE_BIN" ;;
  haproxy) ;;
  *) die "COST_TARGET is spoke or haproxy, not '$TARGET'" ;;
esac
need=()
if [ "$TARGET" = haproxy ] && ! command -v haproxy >/dev/null; then need+=(haproxy); fi
command -v valgrind >/dev/null || need+=(valgrind)
command -v nginx >/dev/null || need+=(nginx)
command -v h2load >/dev/null || need+=(nghttp2-client)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

RUN=$(mktemp -d /tmp/spoke-cost-h2.XXXXXX)
mkdir -p "$RUN/logs" "$RUN/tmp"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$RUN"
}
trap cleanup EXIT

# The backend: nginx 1.25.1 and later spell an h2c listener `http2 on;`, older ones
# `listen ... http2;` (1.25.0 takes both).
version=$(nginx -v 2>&1 | sed 's/.*nginx\///; s/ .*//')
if printf '%s\n1.25.0\n' "$version" | sort -V -C; then
  listen="listen 127.0.0.1:$BACKEND_PORT http2;"
else
  listen="listen 127.0.0.1:$BACKEND_PORT; http2 on;"
fi
{
  nginx_head backend
  echo "  http2_max_concurrent_streams 1000;"
  echo "  server { $listen location / { return 200 \"ok\\n\"; } }"
  echo "}"
} >"$RUN/backend.conf"
nginx -p "$RUN" -e "$RUN/logs/backend.err" -c "$RUN/backend.conf" >"$RUN/logs/backend.log" 2>&1 &
PIDS+=($!)

python3 "$HERE/spoke_cases.py" yaml plain --backend "127.0.0.1:$BACKEND_PORT" >"$RUN/mesh.yaml"
# shellcheck disable=SC2207
spoke_env=($(spoke_plain_env "$RUN/mesh.yaml" "$OUT_PORT" "$ADMIN_PORT" "$IN_PORT"))

haproxy_h2_cfg "$HAPROXY_PORT" "$BACKEND_PORT" >"$RUN/haproxy.cfg"
if [ "$TARGET" = spoke ]; then PORT=$OUT_PORT; else PORT=$HAPROXY_PORT; fi

# one_ok: one request through the target answered 200.
one_ok() {
  h2load -n1 -c1 --connect-to="127.0.0.1:$PORT" "$URI" 2>/dev/null |
    grep -q '1 succeeded'
}

# callgrind N -> the callgrind file of the thread that serves the requests (spoke's event
# loop, haproxy's one thread) after a warm-up request and N more.
callgrind() {
  local out="$RUN/cg.$1" pid f
  if [ "$TARGET" = spoke ]; then
    env "${spoke_env[@]}" valgrind --tool=callgrind --separate-threads=yes \
      --callgrind-out-file="$out" "$SPOKE_BIN" 2>"$RUN/logs/vg.$1.log" &
  else
    valgrind --tool=callgrind --callgrind-out-file="$out-01" \
      haproxy -db -f "$RUN/haproxy.cfg" 2>"$RUN/logs/vg.$1.log" &
  fi
  pid=$!
  PIDS+=($pid)
  for _ in $(seq 1 300); do one_ok && break; sleep 0.2; done
  one_ok || die "$TARGET under callgrind answered no HTTP/2 request"
  h2load -n "$1" -c"$CONNS" -m"$STREAMS" -t1 --connect-to="127.0.0.1:$PORT" "$URI" >"$RUN/h2load.$1" 2>&1
  grep -q "$1 succeeded" "$RUN/h2load.$1" || die "h2load: $(grep '^requests:' "$RUN/h2load.$1")"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  # spoke: the loop's thread file is the one whose functions include the loop's run.
  for f in "$out"-*; do
    if { [ "$TARGET" = haproxy ] || grep -q "fn=.*EventLoop.*run" "$f"; } &&
      grep -q "^summary:" "$f"; then
      echo "$f"
      return
    fi
  done
  die "no callgrind file of the serving thread"
}

f1=$(callgrind "$N1")
f2=$(callgrind "$N2")
[ -n "${COST_KEEP:-}" ] && cp "$RUN"/cg.* "$COST_KEEP"/
c1=$(awk '/^summary:/{print $2}' "$f1")
c2=$(awk '/^summary:/{print $2}' "$f2")
python3 - "$N1" "$N2" "$c1" "$c2" "$STREAMS" "$CONNS" "$TARGET" <<'EOF'
import sys
n1, n2, c1, c2, m, c = map(int, sys.argv[1:7])
where = "on the event loop" if sys.argv[7] == "spoke" else "(haproxy, its one thread)"
print(f"HTTP/2 instructions per request {where}: {(c2 - c1) / (n2 - n1):.0f}"
      f"  ({c1} at {n1}, {c2} at {n2}; h2load -c{c} -m{m})")
EOF
if [ "$TARGET" = spoke ]; then
  echo "by crate (self cost per request):"
  python3 "$HERE/cg_crates.py" "$N1" "$f1" "$N2" "$f2"
fi
