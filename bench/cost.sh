#!/usr/bin/env bash
# bench/cost.sh: instructions and system calls per request on spoke's event loop, the two
# figures that must not grow on the plain HTTP/1.1 path as features arrive.
#
# Runs spoke under callgrind (per-thread counts) twice, with N1 and N2 keep-alive GETs on one
# connection to a loopback backend; the event-loop thread's instructions per request are the
# difference divided by N2 - N1, which cancels start-up and discovery. Then counts the loop's
# system calls per request the same way with strace. Deterministic: callgrind counts
# instructions, not time, so a busy machine changes nothing but the wall clock.
#
# Usage: bench/cost.sh            (SPOKE_BIN, N1=1000, N2=6000, COST_PORT_BASE=18600)
# Needs valgrind and strace (installed with apt-get when missing), python3. Loopback only;
# every process it starts is stopped by PID on exit.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
SPOKE_BIN=${SPOKE_BIN:-${CARGO_TARGET_DIR:-/var/tmp/spoke-target}/release/spoke}
N1=${N1:-1000}
N2=${N2:-6000}
BASE=${COST_PORT_BASE:-18600}
BACKEND_PORT=$((BASE + 1)) OUT_PORT=$((BASE + 2)) ADMIN_PORT=$((BASE + 3)) IN_PORT=$((BASE + 4))

[ -x "$SPOKE_BIN" ] || { echo "no spoke binary at $SPOKE_BIN" >&2; exit 1; }
need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v strace >/dev/null || need+=(strace)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

RUN=$(mktemp -d /tmp/spoke-cost.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$RUN"
}
trap cleanup EXIT

python3 "$HERE/spoke_cases.py" yaml plain --backend "127.0.0.1:$BACKEND_PORT" >"$RUN/mesh.yaml"
python3 - "$BACKEND_PORT" <<'EOF' &
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(64)
RESP = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n"
def serve(c):
    buf = b""
    while True:
        d = c.recv(65536)
        if not d:
            return
        buf += d
        while b"\r\n\r\n" in buf:
            _, buf = buf.split(b"\r\n\r\n", 1)
            c.sendall(RESP)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF
PIDS+=($!)

# shellcheck disable=SC2207
spoke_env=($(spoke_plain_env "$RUN/mesh.yaml" "$OUT_PORT" "$ADMIN_PORT" "$IN_PORT"))

# load N: N sequential keep-alive GETs on one connection (after one warm-up request).
load() {
  python3 - "$OUT_PORT" "$1" <<'EOF'
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
deadline = time.time() + 120
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port)); break
    except OSError:
        if time.time() > deadline: raise
        time.sleep(0.1)
req = b"GET /x HTTP/1.1\r\nHost: books.default.svc.cluster.local:7000\r\n\r\n"
def one():
    s.sendall(req); got = b""
    while not got.endswith(b"ok\n"):
        d = s.recv(65536)
        if not d: raise SystemExit("connection closed")
        got += d
    if not got.startswith(b"HTTP/1.1 200"): raise SystemExit("bad answer: %r" % got[:80])
one()
for _ in range(n): one()
s.close()
EOF
}

wait_ready() {
  for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "spoke did not become ready" >&2; exit 1
}

# callgrind N -> event-loop instructions
callgrind() {
  local out="$RUN/cg.$1"
  env "${spoke_env[@]}" valgrind --tool=callgrind --separate-threads=yes \
    --callgrind-out-file="$out" "$SPOKE_BIN" 2>"$RUN/vg.$1.log" &
  local pid=$!
  PIDS+=($pid)
  wait_ready
  load "$1"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  # The loop's thread is named event-loop; find its file by the thread's function names.
  local f
  for f in "$out"-*; do
    if grep -q "event_loop" "$f" && grep -q "^summary:" "$f"; then
      if grep -q "fn=.*EventLoop.*run" "$f"; then
        awk '/^summary:/{print $2}' "$f"; return
      fi
    fi
  done
  echo "no event-loop thread file" >&2; exit 1
}

# strace N -> event-loop system calls
syscalls() {
  env "${spoke_env[@]}" "$SPOKE_BIN" &
  local pid=$!
  PIDS+=($pid)
  wait_ready
  local tid
  tid=$(grep -l '^event-loop' /proc/"$pid"/task/*/comm | head -1 | awk -F/ '{print $5}')
  strace -f -c -q -p "$tid" -o "$RUN/st.$1" &
  local spid=$!
  sleep 0.5
  load "$1"
  kill -INT "$spid"; wait "$spid" 2>/dev/null || true
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  awk '$NF=="total"{print $(NF-2)}' "$RUN/st.$1"
}

c1=$(callgrind "$N1"); c2=$(callgrind "$N2")
[ -n "${COST_KEEP:-}" ] && cp "$RUN"/cg.* "$COST_KEEP"/
s1=$(syscalls "$N1"); s2=$(syscalls "$N2")
python3 - "$N1" "$N2" "$c1" "$c2" "$s1" "$s2" <<'EOF'
import sys
n1, n2, c1, c2, s1, s2 = map(int, sys.argv[1:])
print(f"instructions per request on the event loop: {(c2 - c1) / (n2 - n1):.0f}"
      f"  ({c1} at {n1}, {c2} at {n2})")
print(f"system calls per request on the event loop: {(s2 - s1) / (n2 - n1):.2f}"
      f"  ({s1} at {n1}, {s2} at {n2})")
EOF
