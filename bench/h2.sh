#!/usr/bin/env bash
# bench/h2.sh: HTTP/2 (h2c prior knowledge on both sides) through spoke, haproxy and nginx,
# against the same h2c backend directly, in one run: requests/s and proxy CPU per request
# at 10 and 100 concurrent streams per connection, and the memory of an idle h2 connection.
#
# Owns: installing h2load (Debian nghttp2-client) and the proxies, the configs, starting,
# pinning and stopping every process of this benchmark, and the raw measurements.
# Neighbours: lib.sh (shared helpers), spoke_cases.py (spoke's controller file), h2idle.py
# (holds N idle h2 connections for the memory rows), report_h2.py (the Markdown report).
# README.md beside this file says what every column means.
#
# Layout (2 cores, loopback only): the backend (nginx, `http2` listener, fixed 200) and
# h2load (1 thread) on CPU 0; every proxy on CPU 1, all started at once, one loaded at a
# time. h2load connects with --connect-to to the target's port and sends the same URI to
# every target, http://books.default.svc.cluster.local:7000/r/x, so the :authority is the
# service name (only spoke looks at it: its embedded controller serves a file that points
# that name at the backend). The memory rows run first, on proxies that have served
# nothing yet; then the throughput runs, in rounds, one target later every round.
#
# Usage: bench/h2.sh [--quick] [--targets "direct haproxy nginx nginx-h1 spoke"]
#                    [--no-install] [--keep]
# Env:   SPOKE_BIN, BENCH_H2_RUNS (3), BENCH_H2_DURATION (5), BENCH_H2_CONNS (8),
#        BENCH_H2_STREAMS ("10 100"), BENCH_H2_IDLE_CONNS (1000), BENCH_H2_PORT_BASE
#        (18100). About 4 minutes with the defaults; --quick about 40 s and writes no
#        result file (the report is printed; --keep keeps it in the run directory).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

RUNS=${BENCH_H2_RUNS:-3}
DURATION=${BENCH_H2_DURATION:-5}
CONNS=${BENCH_H2_CONNS:-8}
STREAMS=${BENCH_H2_STREAMS:-10 100}
IDLE_CONNS=${BENCH_H2_IDLE_CONNS:-1000}
PORT_BASE=${BENCH_H2_PORT_BASE:-18100}
SPOKE_BIN=${SPOKE_BIN:-${CARGO_TARGET_DIR:-/var/tmp/spoke-target}/release/spoke}
TARGETS="direct haproxy nginx nginx-h1 spoke"
INSTALL=1
KEEP=0
QUICK=0

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; RUNS=1; DURATION=2; IDLE_CONNS=200; shift ;;
    --targets) TARGETS=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "h2.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[ -n "${TARGETS// /}" ] || die "no targets (--targets)"
for t in $TARGETS; do
  case "$t" in direct|haproxy|nginx|nginx-h1|spoke) ;; *) die "unknown target '$t'" ;; esac
done
for v in "$RUNS" "$DURATION" "$CONNS" "$IDLE_CONNS" $STREAMS; do
  case "$v" in ''|*[!0-9]*|0) die "BENCH_H2_* values are positive whole numbers (got '$v')" ;; esac
done

BACKEND_PORT=$((PORT_BASE + 1))    # h2c (prior knowledge)
BACKEND_H1_PORT=$((PORT_BASE + 2)) # HTTP/1.1, for nginx-h1's upstream only
HAPROXY_PORT=$((PORT_BASE + 3))
NGINX_PORT=$((PORT_BASE + 4))      # grpc_pass: h2c upstream
NGINX_H1_PORT=$((PORT_BASE + 5))   # proxy_pass: HTTP/1.1 upstream
SPOKE_PORT=$((PORT_BASE + 6))
SPOKE_ADMIN=$((PORT_BASE + 7))
SPOKE_INBOUND=$((PORT_BASE + 8))
AUTHORITY=books.default.svc.cluster.local:7000
URI=http://$AUTHORITY/r/x
CLK_TCK=$(getconf CLK_TCK)

# ------------------------------------------------------------------ install

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v curl >/dev/null || need+=(curl)
command -v taskset >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  [ "$INSTALL" = 1 ] || die "missing: ${need[*]} (and --no-install given)"
  apt_install "${need[@]}"
fi
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (found $(nproc))"
nginx -V 2>&1 | grep -q -- '--with-http_v2_module' || die "this nginx has no HTTP/2 module"

HAVE_SPOKE=0
if [[ " $TARGETS " == *" spoke "* ]]; then
  if [ -x "$SPOKE_BIN" ]; then HAVE_SPOKE=1
  else log "warning: no spoke binary at $SPOKE_BIN (build it, or set SPOKE_BIN): skipping spoke"
  fi
fi

# ------------------------------------------------------------------ processes

RUN=$(mktemp -d /tmp/spoke-h2.XXXXXX)
mkdir -p "$RUN/logs" "$RUN/tmp"
RAW=$RUN/raw.jsonl
: >"$RAW"
PIDS=()
NS_MADE=0 # loopback of the host, no namespace of its own (ns_cleanup)

cleanup() { ns_cleanup; }
trap cleanup EXIT
trap 'exit 130' INT TERM


alive() { # NAME PID: dies with the log when PID has exited
  kill -0 "$2" 2>/dev/null || { tail -20 "$RUN/logs/$1.log" >&2; die "$1 exited"; }
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_h2 NAME PID PORT: until one h2c request through PORT succeeds (5 s at most).
wait_h2() {
  local name=$1 pid=$2 port=$3
  for _ in $(seq 50); do
    alive "$name" "$pid"
    h2load -n1 -c1 --connect-to="127.0.0.1:$port" "$URI" 2>/dev/null |
      grep -q '^requests: 1 total, 1 started, 1 done, 1 succeeded' && return 0
    sleep 0.1
  done
  tail -20 "$RUN/logs/$name.log" >&2
  die "$name: no h2c answer through port $port within 5 s"
}

record() { printf '%s\n' "$1" >>"$RAW"; }

# mem_json PID: RSS, anonymous memory, high-water mark (KiB), open fds, threads.
mem_json() {
  local pid=$1
  printf '"rss_kib":%s,"anon_kib":%s,"hwm_kib":%s,"fds":%s,"threads":%s' \
    "$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status")" \
    "$(awk '/^Anonymous:/{print $2}' "/proc/$pid/smaps_rollup")" \
    "$(awk '/^VmHWM:/{print $2}' "/proc/$pid/status")" \
    "$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)" \
    "$(awk '/^Threads:/{print $2}' "/proc/$pid/status")"
}

# child_ticks: sets CHILD_TICKS to the user + system time of this shell's waited-for
# children so far, in clock ticks (bash `times`, second line). h2load is one of them, so
# the difference over a run is h2load's own CPU time. Call it directly, not in $(...): a
# subshell's `times` knows nothing of this shell's children.
child_ticks() {
  times >"$RUN/times"
  CHILD_TICKS=$(awk -v hz="$CLK_TCK" 'NR == 2 {
    t = 0
    for (i = 1; i <= 2; i++) { split($i, p, "m"); sub(/s$/, "", p[2]); t += p[1] * 60 + p[2] }
    printf "%d\n", t * hz + 0.5 }' "$RUN/times")
}

now() { date +%s.%N; }

# ------------------------------------------------------------------ configs

# h2_listen ADDR: an h2c (prior knowledge) listener in this nginx's syntax: `http2 on;`
# from 1.25.1, the `http2` listen parameter before (1.25.0 has both; the old one is used).
NGINX_VERSION=$(nginx -v 2>&1 | sed 's/.*nginx\///; s/ .*//')
h2_listen() {
  if printf '%s\n1.25.0\n' "$NGINX_VERSION" | sort -V -C; then
    echo "listen $1 http2;"
  else
    echo "listen $1; http2 on;"
  fi
}

write_backend() {
  {
    echo "# Backend: one nginx process answering a fixed 200 to every request, over h2c"
    echo "# (prior knowledge) and, for nginx-h1's upstream, over HTTP/1.1 on a second port."
    nginx_head backend
    cat <<EOF
  http2_max_concurrent_streams 1000;
  server { $(h2_listen "127.0.0.1:$BACKEND_PORT") location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:$BACKEND_H1_PORT; location / { return 200 "ok\n"; } }
}
EOF
  } >"$RUN/backend.conf"
}

write_nginx() { # NAME PORT: grpc_pass to the h2c port (nginx) or proxy_pass to HTTP/1.1
  local name=$1 port=$2
  {
    echo "# nginx, h2c to clients; upstream keep-alive, $name."
    nginx_head "$name"
    if [ "$name" = nginx ]; then
      cat <<EOF
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 128; keepalive_requests 10000000; }
  server { $(h2_listen "127.0.0.1:$port") location / { grpc_pass grpc://backend; } }
}
EOF
    else
      cat <<EOF
  upstream backend { server 127.0.0.1:$BACKEND_H1_PORT; keepalive 128; keepalive_requests 10000000; }
  server {
    $(h2_listen "127.0.0.1:$port")
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
    fi
  } >"$RUN/$name.conf"
}

write_haproxy() {
  haproxy_h2_cfg "$HAPROXY_PORT" "$BACKEND_PORT" "$RUN/haproxy.pid" >"$RUN/haproxy.cfg"
}

# ------------------------------------------------------------------ setup

for p in $BACKEND_PORT $BACKEND_H1_PORT $HAPROXY_PORT $NGINX_PORT $NGINX_H1_PORT $SPOKE_PORT \
  $SPOKE_ADMIN $SPOKE_INBOUND; do
  port_free "$p" || die "port $p is in use (set BENCH_H2_PORT_BASE)"
done
[ "$(ulimit -n)" -ge $((IDLE_CONNS + 100)) ] || ulimit -n $((IDLE_CONNS + 100)) ||
  die "cannot open $IDLE_CONNS connections (ulimit -n is $(ulimit -n))"

BUSY=$(busy_pct) # anything else on the CPUs (a cargo build) makes every number here noisy
[ "$BUSY" -le 5 ] || log "warning: the machine is ${BUSY}% busy before the h2 runs: numbers will be noisy"
record "{\"kind\":\"h2-meta\",\"date\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"quick\":$QUICK,\
\"busy_before_pct\":$BUSY,\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"runs\":$RUNS,\
\"duration_s\":$DURATION,\"conns\":$CONNS,\"streams\":[${STREAMS// /,}],\"idle_conns\":$IDLE_CONNS,\
\"uri\":\"$URI\",\"nginx\":\"$NGINX_VERSION\",\"haproxy\":\"$(haproxy -v | awk 'NR==1{print $3}')\",\
\"h2load\":\"$(h2load --version | awk '{print $2}')\",\"spoke_bin\":\"$SPOKE_BIN\",\
\"kernel\":\"$(uname -r)\",\"nproc\":$(nproc),\
\"cpu\":\"$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)\"}"

write_backend
start backend 0 nginx -p "$RUN" -e "$RUN/logs/backend.err" -c "$RUN/backend.conf"
BACKEND_PID=$STARTED
wait_h2 backend "$BACKEND_PID" "$BACKEND_PORT"
log "backend nginx on 127.0.0.1:$BACKEND_PORT (h2c) and :$BACKEND_H1_PORT (pid $BACKEND_PID, CPU 0)"

declare -A TPORT TPID
ACTIVE=()
for t in $TARGETS; do
  case "$t" in
    direct) TPORT[direct]=$BACKEND_PORT; TPID[direct]=- ;;
    haproxy)
      write_haproxy
      start haproxy 1 haproxy -db -f "$RUN/haproxy.cfg"
      TPORT[haproxy]=$HAPROXY_PORT; TPID[haproxy]=$STARTED
      ;;
    nginx|nginx-h1)
      port=$NGINX_PORT
      [ "$t" = nginx ] || port=$NGINX_H1_PORT
      write_nginx "$t" "$port"
      start "$t" 1 nginx -p "$RUN" -e "$RUN/logs/$t.err" -c "$RUN/$t.conf"
      TPORT[$t]=$port; TPID[$t]=$STARTED
      ;;
    spoke)
      [ "$HAVE_SPOKE" = 1 ] || continue
      python3 "$HERE/spoke_cases.py" yaml plain --backend "127.0.0.1:$BACKEND_PORT" >"$RUN/spoke.yaml"
      # shellcheck disable=SC2046
      start spoke 1 env $(spoke_plain_env "$RUN/spoke.yaml" "$SPOKE_PORT" "$SPOKE_ADMIN" "$SPOKE_INBOUND") "$SPOKE_BIN"
      TPORT[spoke]=$SPOKE_PORT; TPID[spoke]=$STARTED
      ;;
  esac
  ACTIVE+=("$t")
done
for t in "${ACTIVE[@]}"; do
  [ "${TPID[$t]}" = - ] || wait_h2 "$t" "${TPID[$t]}" "${TPORT[$t]}"
done
log "targets: ${ACTIVE[*]}"

# ------------------------------------------------------------------ idle connections

# idle_phase TARGET MODE: opens IDLE_CONNS connections to TARGET in MODE (h2idle.py) and
# records the proxy's memory before and once they are all ready (plus 1 s). The
# connections stay open (the holder's PID is in HOLDERS) until idle_release.
HOLDERS=()
idle_phase() {
  local t=$1 mode=$2 pid=${TPID[$1]} before ready=$RUN/idle-$1-$2.json
  before=$(mem_json "$pid")
  start "idle-$t-$mode" 0 python3 "$HERE/h2idle.py" --addr "127.0.0.1:${TPORT[$t]}" \
    --authority "$AUTHORITY" --conns "$IDLE_CONNS" --mode "$mode" --ready "$ready" \
    --setup 30 --hold 120
  HOLDERS+=("$STARTED")
  for _ in $(seq 400); do [ -e "$ready" ] && break; alive "idle-$t-$mode" "$STARTED"; sleep 0.1; done
  [ -e "$ready" ] || die "h2idle against $t ($mode) was not ready within 40 s"
  sleep 1
  alive "$t" "$pid"
  record "{\"kind\":\"h2-idle\",\"target\":\"$t\",\"mode\":\"$mode\",\"before\":{$before},\
\"after\":{$(mem_json "$pid")},\"result\":$(cat "$ready")}"
  log "  $t idle ($mode): $(cat "$ready")"
}
idle_release() {
  local h
  for h in "${HOLDERS[@]}"; do stop "$h"; done
  HOLDERS=()
}

sleep 1
for t in "${ACTIVE[@]}"; do
  [ "${TPID[$t]}" != - ] || continue
  record "{\"kind\":\"h2-mem\",\"target\":\"$t\",\"phase\":\"idle\",$(mem_json "${TPID[$t]}")}"
done
log "idle h2 connections: $IDLE_CONNS per proxy, after the handshake, then $IDLE_CONNS more after one request each"
for t in "${ACTIVE[@]}"; do
  [ "${TPID[$t]}" != - ] || continue
  idle_phase "$t" settings
  idle_phase "$t" request # while the first set is still open: nothing freed to reuse
  idle_release
done

# ------------------------------------------------------------------ throughput

# one TARGET STREAMS RUN_NO: one h2load run of DURATION s, recorded with the proxy's,
# the backend's and h2load's CPU ticks over it and the host steal.
one() {
  local t=$1 m=$2 n=$3 pid=${TPID[$1]} p0=0 p1=0 b0 b1 c0 c1 s0 s1 w0 w1 out
  alive backend "$BACKEND_PID"
  [ "$pid" = - ] || alive "$t" "$pid"
  s0=$(steal)
  b0=$(ticks "$BACKEND_PID")
  [ "$pid" = - ] || p0=$(ticks "$pid")
  child_ticks
  c0=$CHILD_TICKS
  w0=$(now)
  taskset -c 0 h2load -t1 -c"$CONNS" -m"$m" -D "$DURATION" --connect-to="127.0.0.1:${TPORT[$t]}" \
    "$URI" >"$RUN/h2load.out" 2>&1 || true
  w1=$(now)
  child_ticks
  c1=$CHILD_TICKS
  [ "$pid" = - ] || p1=$(ticks "$pid")
  b1=$(ticks "$BACKEND_PID")
  s1=$(steal)
  out=$(python3 - "$RUN/h2load.out" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
r = {}
m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
if m:
    r["finished_s"] = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
    r["h2load_rps"] = float(m.group(3))
m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
              r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
if m:
    for k, v in zip(("total", "started", "done", "succeeded", "failed", "errored",
                     "timeout"), m.groups()):
        r[k] = int(v)
m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
if m:
    r["status_2xx"], r["status_3xx"], r["status_4xx"], r["status_5xx"] = map(int, m.groups())
print(json.dumps(r))
EOF
)
  case "$out" in *succeeded*) ;; *) cat "$RUN/h2load.out" >&2; die "could not parse h2load's output ($t, -m$m)" ;; esac
  log "  $t -m$m run $n: $(python3 -c 'import json,sys; r=json.loads(sys.argv[1])
print("%.0f req/s, %d failed+errored" % (r["h2load_rps"], r["failed"] + r["errored"]))' "$out"),\
 proxy $((p1 - p0)) ticks"
  record "{\"kind\":\"h2\",\"target\":\"$t\",\"streams\":$m,\"conns\":$CONNS,\"run\":$n,\
\"duration_s\":$DURATION,\"wall_s\":$(awk -v a="$w0" -v b="$w1" 'BEGIN{printf "%.3f", b - a}'),\
\"cpu_ticks\":$((p1 - p0)),\"backend_ticks\":$((b1 - b0)),\"h2load_ticks\":$((c1 - c0)),\
\"clk_tck\":$CLK_TCK,\"has_proxy\":$([ "$pid" = - ] && echo false || echo true),\
$(steal_json "$s0" "$s1"),\"result\":$out}"
}

log "warm-up: 1 s per target"
for t in "${ACTIVE[@]}"; do
  taskset -c 0 h2load -t1 -c"$CONNS" -m10 -D 1 --connect-to="127.0.0.1:${TPORT[$t]}" "$URI" \
    >/dev/null 2>&1 || true
done

log "throughput: $RUNS rounds of ${DURATION}s per target at -c$CONNS and -m ${STREAMS// /, -m }"
count=${#ACTIVE[@]}
cycle=0
for n in $(seq "$RUNS"); do
  for m in $STREAMS; do
    # Start one target later every time, so that no target always follows the same one.
    for i in $(seq 0 $((count - 1))); do
      one "${ACTIVE[$(((i + cycle) % count))]}" "$m" "$n"
    done
    cycle=$((cycle + 1))
  done
done

for t in "${ACTIVE[@]}"; do
  [ "${TPID[$t]}" != - ] || continue
  record "{\"kind\":\"h2-mem\",\"target\":\"$t\",\"phase\":\"after\",$(mem_json "${TPID[$t]}")}"
done
if [ -n "${TPID[spoke]:-}" ]; then
  lines=$(curl -s "http://127.0.0.1:$SPOKE_ADMIN/metrics" |
    grep -E '^(request_total|response_total|spoke_detect_total|tcp_open_total)\{direction="outbound"' || true)
  record "{\"kind\":\"h2-spoke-metrics\",\"lines\":$(python3 -c \
'import json,sys; print(json.dumps(sys.stdin.read().splitlines()))' <<<"$lines")}"
fi

REPORT=$RUN/report.md
STAMP=$(date -u +%Y-%m-%d-%H%M)
python3 "$HERE/report_h2.py" "$RAW" >"$REPORT"
if [ "$QUICK" = 0 ]; then
  mkdir -p "$HERE/results"
  cp "$REPORT" "$HERE/results/$STAMP-h2.md"
  REPORT=$HERE/results/$STAMP-h2.md
fi
cat "$REPORT"
if [ "$QUICK" = 1 ]; then log "quick run: no result file written (the report stays in $RUN only with --keep)"
else log "report written to $REPORT"
fi
