#!/usr/bin/env bash
# bench/run.sh: spoke's benchmark, side by side with nginx and haproxy, in one run.
#
# Owns: installing the load tools (apt), starting and pinning every process, measuring, and
# stopping everything on exit. Neighbours: loadgen.py (fixed-rate latency with the
# coordinated-omission correction), spoke_cases.py (spoke's controller files, the 1,000
# destinations and profile-update cases), report.py (the Markdown report). README.md beside
# this file says what every column means.
#
# Layout (2 cores): the proxy under test alone on CPU 1; the backend (nginx, fixed 200) and
# the load generator on CPU 0. The "1 core" latency runs move the proxy onto CPU 0 too.
# All targets run at once and their throughput runs are cut into short wrk slices that are
# interleaved across targets (see below). Loopback only; every run is bounded (about 6
# minutes in all with the defaults). Then opaque.sh adds the opaque TCP rows (in a network
# namespace of its own, about 2 minutes) to the same raw measurements and report, and with
# --mtls, mtls.sh the mTLS hop rows (another namespace, about 5 minutes).
#
# Usage: bench/run.sh [--quick] [--targets "direct nginx haproxy spoke spoke-routes"]
#                     [--no-install] [--keep] [--opaque-only | --no-opaque] [--mtls]
# Env:   SPOKE_BIN (default $CARGO_TARGET_DIR/release/spoke, else /var/tmp/spoke-target/...),
#        BENCH_DURATION (10), BENCH_SLICE (2), BENCH_RUNS (3), BENCH_RATE (2000),
#        BENCH_CONNS (64), BENCH_PORT_BASE (18000); opaque.sh's BENCH_OPAQUE_* too.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
DURATION=${BENCH_DURATION:-10}
RUNS=${BENCH_RUNS:-3}
RATE=${BENCH_RATE:-2000}
CONNS=${BENCH_CONNS:-64}
PORT_BASE=${BENCH_PORT_BASE:-18000}
SPOKE_BIN=${SPOKE_BIN:-${CARGO_TARGET_DIR:-/var/tmp/spoke-target}/release/spoke}
TARGETS="direct nginx haproxy spoke spoke-routes"
INSTALL=1
KEEP=0
LAT_DURATION=10
SLICE=${BENCH_SLICE:-2}
ROUTES=100
DESTS=1000
OPAQUE=1
OPAQUE_ARGS=()
MTLS=0
MTLS_ARGS=()

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) DURATION=3; RUNS=1; LAT_DURATION=3; SLICE=3; OPAQUE_ARGS+=(--quick)
      MTLS_ARGS+=(--quick); shift ;;
    --targets) TARGETS=$2; shift 2 ;;
    --no-install) INSTALL=0; OPAQUE_ARGS+=(--no-install); MTLS_ARGS+=(--no-install); shift ;;
    --keep) KEEP=1; OPAQUE_ARGS+=(--keep); MTLS_ARGS+=(--keep); shift ;;
    --mtls) MTLS=1; shift ;;
    --opaque-only) OPAQUE=only; shift ;;
    --no-opaque) OPAQUE=0; shift ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

# The opaque rows: the targets that have one (spoke-routes has no opaque counterpart).
OPAQUE_TARGETS=""
for t in $TARGETS; do
  case "$t" in direct|nginx|haproxy|spoke) OPAQUE_TARGETS="$OPAQUE_TARGETS $t" ;; esac
done
if [ "$OPAQUE" = only ]; then
  exec "$HERE/opaque.sh" "${OPAQUE_ARGS[@]}" --targets "${OPAQUE_TARGETS# }"
fi

# A throughput run of DURATION seconds is SLICES wrk slices of SLICE seconds each,
# interleaved with the other targets' slices (see "max throughput" below).
case "$DURATION$SLICE" in *[!0-9]*) echo "run.sh: BENCH_DURATION and BENCH_SLICE are whole seconds" >&2; exit 2 ;; esac
if [ "$SLICE" -lt 1 ] || [ $((DURATION % SLICE)) -ne 0 ]; then
  echo "run.sh: BENCH_SLICE ($SLICE) must divide BENCH_DURATION ($DURATION)" >&2
  exit 2
fi
SLICES=$((DURATION / SLICE))

BACKEND_PORT=$((PORT_BASE + 1))
NGINX_PORT=$((PORT_BASE + 2))
HAPROXY_PORT=$((PORT_BASE + 3))
SPOKE_PORT=$((PORT_BASE + 4))
SPOKE_ADMIN=$((PORT_BASE + 5))
SPOKE_INBOUND=$((PORT_BASE + 6))
ROUTES_PORT=$((PORT_BASE + 7))   # the second spoke (100 routes) runs beside the first
ROUTES_ADMIN=$((PORT_BASE + 8))
ROUTES_INBOUND=$((PORT_BASE + 9))
CONTROLLER_PORT=$((PORT_BASE + 10)) # `spoke controller` on its own, for the 1,000 destinations
BACKEND=127.0.0.1:$BACKEND_PORT
# Every target gets the same request; only spoke looks at the Host, to find the destination.
HOST_HDR="Host: books.default.svc.cluster.local:7000"
REQ_PATH=/r$((ROUTES - 1))/x  # matches the last of the 100 routes in the spoke-routes case
CLK_TCK=$(getconf CLK_TCK)

# ------------------------------------------------------------------ install

install_deps() {
  local need=()
  command -v nginx >/dev/null || need+=(nginx)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v wrk >/dev/null || need+=(wrk)
  command -v curl >/dev/null || need+=(curl)
  command -v taskset >/dev/null || need+=(util-linux)
  command -v python3 >/dev/null || need+=(python3)
  [ ${#need[@]} -eq 0 ] && return 0
  [ "$INSTALL" = 1 ] || die "missing: ${need[*]} (and --no-install given)"
  apt_install "${need[@]}"
}

install_deps
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (found $(nproc))"

# ------------------------------------------------------------------ processes

RUN=$(mktemp -d /tmp/spoke-bench.XXXXXX)
mkdir -p "$RUN/logs" "$RUN/tmp"
RAW=$RUN/raw.jsonl
: >"$RAW"
PIDS=()
NS_MADE=0 # no namespace of its own (ns_cleanup)

cleanup() { ns_cleanup; }
trap cleanup EXIT
trap 'exit 130' INT TERM


port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_http URL NAME PID: until URL answers 200 (5 s at most).
wait_http() {
  local url=$1 name=$2 pid=$3
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$RUN/logs/$name.log" >&2; die "$name exited"; }
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "$HOST_HDR" "$url" 2>/dev/null)" = 200 ] && return 0
    sleep 0.05
  done
  tail -20 "$RUN/logs/$name.log" >&2
  die "$name did not answer 200 on $url within 5 s"
}

# ------------------------------------------------------------------ measuring

# ticks, steal, steal_json, busy_pct: lib.sh.

# mem PID: JSON fields rss/hwm/anon (KiB) and threads.
mem() {
  local pid=$1 rss hwm thr anon
  rss=$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status")
  hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$pid/status")
  thr=$(awk '/^Threads:/{print $2}' "/proc/$pid/status")
  anon=$(awk '/^Anonymous:/{print $2}' "/proc/$pid/smaps_rollup")
  printf '"rss_kib":%s,"hwm_kib":%s,"anon_kib":%s,"threads":%s' "$rss" "$hwm" "$anon" "$thr"
}

record() { printf '%s\n' "$1" >>"$RAW"; }

# wrk_slice TARGET: one closed-loop wrk slice of $SLICE seconds against a started target;
# adds its requests, seconds, proxy CPU ticks, errors and steal to the target's running
# totals (SUM_*), which wrk_record turns into one run.
wrk_slice() {
  local target=$1 port=${TPORT[$1]} pid=${TPID[$1]} t0=0 t1=0 s0 s1 out
  s0=$(steal)
  [ "$pid" = - ] || t0=$(ticks "$pid")
  out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${SLICE}s" -H "$HOST_HDR" \
    "http://127.0.0.1:$port$REQ_PATH")
  [ "$pid" = - ] || t1=$(ticks "$pid")
  s1=$(steal)
  local reqs secs non2xx sockerr sa0 sa1 sb0 sb1
  reqs=$(awk '/requests in/{print $1}' <<<"$out")
  secs=$(awk '/requests in/{sub(/s,$/, "", $4); print $4}' <<<"$out")
  non2xx=$(awk '/Non-2xx/{print $NF}' <<<"$out")
  sockerr=$({ grep 'Socket errors' <<<"$out" || true; } | { grep -o '[0-9]\+' || true; } |
    awk '{s += $1} END {print s + 0}')
  if [ -z "$reqs" ] || [ -z "$secs" ]; then
    echo "$out" >&2
    die "could not parse wrk output"
  fi
  read -r sa0 sb0 <<<"$s0"
  read -r sa1 sb1 <<<"$s1"
  SUM_REQS[$target]=$((${SUM_REQS[$target]:-0} + reqs))
  SUM_SECS[$target]=$(awk -v a="${SUM_SECS[$target]:-0}" -v b="${secs%s}" 'BEGIN{print a + b}')
  SUM_TICKS[$target]=$((${SUM_TICKS[$target]:-0} + t1 - t0))
  SUM_NON2XX[$target]=$((${SUM_NON2XX[$target]:-0} + ${non2xx:-0}))
  SUM_SOCKERR[$target]=$((${SUM_SOCKERR[$target]:-0} + sockerr))
  SUM_STEAL0[$target]=$((${SUM_STEAL0[$target]:-0} + sa1 - sa0))
  SUM_STEAL1[$target]=$((${SUM_STEAL1[$target]:-0} + sb1 - sb0))
}

# wrk_record TARGET RUN_NO: records the slices summed since the last call as one run, and
# resets the totals.
wrk_record() {
  local target=$1 n=$2 pid=${TPID[$1]} reqs=${SUM_REQS[$1]} secs=${SUM_SECS[$1]} rps
  rps=$(awk -v r="$reqs" -v s="$secs" 'BEGIN{printf "%.2f", (s > 0 ? r / s : 0)}')
  log "  $target wrk run $n: $rps req/s, ${SUM_TICKS[$target]} CPU ticks," \
    "errors ${SUM_NON2XX[$target]}+${SUM_SOCKERR[$target]}"
  record "{\"target\":\"$target\",\"kind\":\"wrk\",\"run\":$n,\"rps\":$rps,\"requests\":$reqs,\
\"seconds\":$secs,\"slices\":$SLICES,\"cpu_ticks\":${SUM_TICKS[$target]},\"clk_tck\":$CLK_TCK,\
\"non2xx\":${SUM_NON2XX[$target]},\"socket_errors\":${SUM_SOCKERR[$target]},\
\"steal_ticks_cpu0\":${SUM_STEAL0[$target]},\"steal_ticks_cpu1\":${SUM_STEAL1[$target]},\
\"has_proxy\":$([ "$pid" = - ] && echo false || echo true)}"
  SUM_REQS[$target]=0; SUM_SECS[$target]=0; SUM_TICKS[$target]=0; SUM_NON2XX[$target]=0
  SUM_SOCKERR[$target]=0; SUM_STEAL0[$target]=0; SUM_STEAL1[$target]=0
}

# lat_run TARGET LAYOUT: fixed-rate latency with the CO correction.
lat_run() {
  local target=$1 layout=$2 port=${TPORT[$1]} out s0 s1
  s0=$(steal)
  out=$(taskset -c 0 python3 "$HERE/loadgen.py" --port "$port" --path "$REQ_PATH" \
    --header "$HOST_HDR" --rate "$RATE" --duration "$LAT_DURATION" --connections "$CONNS") || true
  s1=$(steal)
  [ -n "$out" ] || die "loadgen produced no result for $target"
  log "  $target latency ($layout): $(python3 -c 'import json,sys; r=json.loads(sys.argv[1]);
e={k: v for k, v in r["errors"].items() if v}
print("p50 %s µs, p99 %s µs, errors %s" % (r["p50_us"], r["p99_us"], e or 0))' "$out")"
  record "{\"target\":\"$target\",\"kind\":\"latency\",\"layout\":\"$layout\",\"clk_tck\":$CLK_TCK,\
$(steal_json "$s0" "$s1"),\"result\":$out}"
}

mem_record() { # TARGET PHASE PID
  record "{\"target\":\"$1\",\"kind\":\"mem\",\"phase\":\"$2\",$(mem "$3")}"
}

# ------------------------------------------------------------------ configs

write_nginx_backend() {
  {
    echo "# Backend: one nginx process answering a fixed 200 to every request."
    nginx_head backend
    cat <<EOF
  server { listen $BACKEND; location / { return 200 "ok\n"; } }
}
EOF
  } >"$RUN/backend.conf"
}

write_nginx_proxy() {
  {
    echo "# nginx as a reverse proxy, keep-alive to the upstream."
    nginx_head nginx
    cat <<EOF
  upstream backend {
    server $BACKEND;
    keepalive 128;
    keepalive_requests 10000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_buffering on;
    }
  }
}
EOF
  } >"$RUN/nginx.conf"
}

write_haproxy() {
  cat >"$RUN/haproxy.cfg" <<EOF
# haproxy: one thread, HTTP mode, keep-alive on both sides with server connection reuse.
global
  nbthread 1
  maxconn 4096
  pidfile $RUN/haproxy.pid
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 300s
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend be
backend be
  server s1 $BACKEND
EOF
}

# start_spoke NAME YAML CPU [OUTBOUND ADMIN INBOUND]: starts spoke, waits for /ready;
# sets $STARTED.
start_spoke() {
  local name=$1 yaml=$2 cpu=$3 out=${4:-$SPOKE_PORT} admin=${5:-$SPOKE_ADMIN}
  local inbound=${6:-$SPOKE_INBOUND}
  # shellcheck disable=SC2046
  start "$name" "$cpu" env $(spoke_plain_env "$yaml" "$out" "$admin" "$inbound") "$SPOKE_BIN"
  wait_http "http://127.0.0.1:$admin/ready" "$name" "$STARTED"
}

# ------------------------------------------------------------------ run

for p in $BACKEND_PORT $NGINX_PORT $HAPROXY_PORT $SPOKE_PORT $SPOKE_ADMIN $SPOKE_INBOUND \
  $ROUTES_PORT $ROUTES_ADMIN $ROUTES_INBOUND $CONTROLLER_PORT; do
  port_free "$p" || die "port $p is in use (set BENCH_PORT_BASE)"
done

HAVE_SPOKE=1
if [ ! -x "$SPOKE_BIN" ]; then
  HAVE_SPOKE=0
  log "warning: no spoke binary at $SPOKE_BIN (build it, or set SPOKE_BIN): skipping spoke"
fi

# Is anything else using the CPUs? Sample /proc/stat for 2 s before starting.
BUSY=$(busy_pct)
[ "$BUSY" -le 5 ] || log "warning: the machine is ${BUSY}% busy before the benchmark: numbers will be noisy"

# stripped_size BIN: size of the executable without symbols and debug info (0 without strip).
stripped_size() {
  if command -v strip >/dev/null && strip -o "$RUN/stripped" "$1" 2>/dev/null; then
    stat -c %s "$RUN/stripped"; rm -f "$RUN/stripped"
  else
    echo 0
  fi
}
SPOKE_SIZE=0
SPOKE_STRIPPED=0
if [ "$HAVE_SPOKE" = 1 ]; then
  SPOKE_SIZE=$(stat -c %s "$SPOKE_BIN")
  SPOKE_STRIPPED=$(stripped_size "$SPOKE_BIN")
fi
record "{\"kind\":\"meta\",\"date\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"nproc\":$(nproc),\
\"cpu\":\"$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)\",\"kernel\":\"$(uname -r)\",\
\"busy_before_pct\":$BUSY,\"duration_s\":$DURATION,\"slice_s\":$SLICE,\"runs\":$RUNS,\"rate\":$RATE,\"conns\":$CONNS,\
\"lat_duration_s\":$LAT_DURATION,\"path\":\"$REQ_PATH\",\
\"nginx\":\"$(nginx -v 2>&1 | sed 's/.*\///')\",\"haproxy\":\"$(haproxy -v | awk 'NR==1{print $3}')\",\
\"wrk\":\"$(wrk -v 2>&1 | awk 'NR==1{print $2}')\",\
\"bin_nginx\":$(stat -c %s "$(command -v nginx)"),\"bin_haproxy\":$(stat -c %s "$(command -v haproxy)"),\
\"bin_spoke\":$SPOKE_SIZE,\"bin_spoke_stripped\":$SPOKE_STRIPPED,\
\"bin_nginx_stripped\":$(stripped_size "$(command -v nginx)"),\
\"bin_haproxy_stripped\":$(stripped_size "$(command -v haproxy)"),\"spoke_bin\":\"$SPOKE_BIN\"}"

write_nginx_backend
write_nginx_proxy
write_haproxy
start backend 0 nginx -p "$RUN" -e "$RUN/logs/backend.err" -c "$RUN/backend.conf"
BACKEND_PID=$STARTED
wait_http "http://$BACKEND/" backend "$BACKEND_PID"
log "backend nginx on $BACKEND (pid $BACKEND_PID, CPU 0)"

# Start every target at once (an idle proxy costs nothing), then interleave the runs:
# round 1 of every target, round 2 of every target, ... so that a slow spell of the host
# (these are virtual machines) spreads over all targets instead of hitting one.
declare -A TPORT TPID
ACTIVE=()
for target in $TARGETS; do
  case "$target" in
    direct)
      TPORT[direct]=$BACKEND_PORT; TPID[direct]=-
      ;;
    nginx)
      start nginx 1 nginx -p "$RUN" -e "$RUN/logs/nginx.err" -c "$RUN/nginx.conf"
      TPORT[nginx]=$NGINX_PORT; TPID[nginx]=$STARTED
      wait_http "http://127.0.0.1:$NGINX_PORT/" nginx "$STARTED"
      ;;
    haproxy)
      start haproxy 1 haproxy -db -f "$RUN/haproxy.cfg"
      TPORT[haproxy]=$HAPROXY_PORT; TPID[haproxy]=$STARTED
      wait_http "http://127.0.0.1:$HAPROXY_PORT/" haproxy "$STARTED"
      ;;
    spoke)
      [ "$HAVE_SPOKE" = 1 ] || continue
      python3 "$HERE/spoke_cases.py" yaml plain --backend "$BACKEND" >"$RUN/spoke.yaml"
      start_spoke spoke "$RUN/spoke.yaml" 1
      TPORT[spoke]=$SPOKE_PORT; TPID[spoke]=$STARTED
      ;;
    spoke-routes)
      [ "$HAVE_SPOKE" = 1 ] || continue
      python3 "$HERE/spoke_cases.py" yaml routes --n "$ROUTES" --backend "$BACKEND" \
        >"$RUN/spoke-routes.yaml"
      start_spoke spoke-routes "$RUN/spoke-routes.yaml" 1 "$ROUTES_PORT" "$ROUTES_ADMIN" \
        "$ROUTES_INBOUND"
      TPORT[spoke-routes]=$ROUTES_PORT; TPID[spoke-routes]=$STARTED
      ;;
    *) die "unknown target '$target'" ;;
  esac
  ACTIVE+=("$target")
done
log "targets: ${ACTIVE[*]}"

sleep 1
for t in "${ACTIVE[@]}"; do
  [ "${TPID[$t]}" = - ] || mem_record "$t" idle "${TPID[$t]}"
done
for t in "${ACTIVE[@]}"; do # warm-up (connections, caches, spoke's first discovery)
  taskset -c 0 wrk -t1 -c"$CONNS" -d2s -H "$HOST_HDR" \
    "http://127.0.0.1:${TPORT[$t]}$REQ_PATH" >/dev/null
done

log "max throughput: $RUNS runs of ${DURATION}s per target, in ${SLICE}s slices"
declare -A SUM_REQS SUM_SECS SUM_TICKS SUM_NON2XX SUM_SOCKERR SUM_STEAL0 SUM_STEAL1
cycle=0
for n in $(seq "$RUNS"); do
  for _ in $(seq "$SLICES"); do
    # One slice of every target, starting one target later each cycle, so that no target
    # always follows the same one (say, the direct run that leaves CPU 1 idle).
    count=${#ACTIVE[@]}
    for i in $(seq 0 $((count - 1))); do
      wrk_slice "${ACTIVE[$(((i + cycle) % count))]}"
    done
    cycle=$((cycle + 1))
  done
  for t in "${ACTIVE[@]}"; do wrk_record "$t" "$n"; done
done

log "latency at $RATE req/s, proxies on CPU 1"
for t in "${ACTIVE[@]}"; do
  if [ "${TPID[$t]}" = - ]; then lat_run "$t" both; else lat_run "$t" 2core; fi
done
log "latency at $RATE req/s, everything on CPU 0"
for t in "${ACTIVE[@]}"; do
  [ "${TPID[$t]}" != - ] || continue
  taskset -a -p -c 0 "${TPID[$t]}" >/dev/null
  lat_run "$t" 1core
  taskset -a -p -c 1 "${TPID[$t]}" >/dev/null
done

for t in "${ACTIVE[@]}"; do
  [ "${TPID[$t]}" = - ] && continue
  mem_record "$t" peak "${TPID[$t]}"
  stop "${TPID[$t]}"
done

if [ "$HAVE_SPOKE" = 1 ] && [[ " $TARGETS " == *" spoke "* ]]; then
  log "spoke: live profile updates"
  python3 "$HERE/spoke_cases.py" yaml update --name update-0 --backend "$BACKEND" >"$RUN/update.yaml"
  start_spoke spoke-update "$RUN/update.yaml" 1
  pid=$STARTED
  out=$(taskset -c 0 python3 "$HERE/spoke_cases.py" update --proxy "127.0.0.1:$SPOKE_PORT" \
    --admin "127.0.0.1:$SPOKE_ADMIN" --file "$RUN/update.yaml" --backend "$BACKEND") || true
  log "  $out"
  [ -n "$out" ] && record "{\"target\":\"spoke\",\"kind\":\"update\",\"result\":$out}"
  stop "$pid"

  log "spoke: $DESTS live destinations, controller in its own process"
  python3 "$HERE/spoke_cases.py" yaml dests --n "$DESTS" --backend "$BACKEND" >"$RUN/dests.yaml"
  # As beside a Linkerd control plane: the proxy's memory alone, the controller's apart.
  start spoke-controller 0 env LINKERD2_PROXY_LOG=warn "$SPOKE_BIN" controller \
    --config "$RUN/dests.yaml" --listen "127.0.0.1:$CONTROLLER_PORT"
  cpid=$STARTED
  # shellcheck disable=SC2046
  start spoke-dests 1 env $(spoke_plain_env "$RUN/dests.yaml" "$SPOKE_PORT" "$SPOKE_ADMIN" \
    "$SPOKE_INBOUND" | sed 's/SPOKE_CONTROLLER_CONFIG=[^ ]*//') \
    "LINKERD2_PROXY_DESTINATION_SVC_ADDR=127.0.0.1:$CONTROLLER_PORT" "$SPOKE_BIN"
  pid=$STARTED
  wait_http "http://127.0.0.1:$SPOKE_ADMIN/ready" spoke-dests "$pid"
  mem_record spoke-dests idle "$pid"
  out=$(taskset -c 0 python3 "$HERE/spoke_cases.py" touch --proxy "127.0.0.1:$SPOKE_PORT" \
    --admin "127.0.0.1:$SPOKE_ADMIN" --count "$DESTS") || true
  log "  $out"
  sleep 2
  [ -n "$out" ] && record "{\"target\":\"spoke\",\"kind\":\"dests\",\"result\":$out,$(mem "$pid"),\"controller_rss_kib\":$(awk '/^VmRSS:/{print $2}' "/proc/$cpid/status")}"
  stop "$pid"
  stop "$cpid"

  log "spoke: $DESTS live destinations, embedded controller (one process)"
  start_spoke spoke-dests-embedded "$RUN/dests.yaml" 1
  pid=$STARTED
  out=$(taskset -c 0 python3 "$HERE/spoke_cases.py" touch --proxy "127.0.0.1:$SPOKE_PORT" \
    --admin "127.0.0.1:$SPOKE_ADMIN" --count "$DESTS") || true
  log "  $out"
  sleep 2
  [ -n "$out" ] && record "{\"target\":\"spoke\",\"kind\":\"dests-embedded\",\"result\":$out,$(mem "$pid")}"
  stop "$pid"
fi

stop "$BACKEND_PID"

if [ "$OPAQUE" = 1 ] && [ -n "$OPAQUE_TARGETS" ]; then
  if [ "$(id -u)" = 0 ]; then
    log "opaque TCP: bench/opaque.sh, same run"
    SPOKE_BIN=$SPOKE_BIN "$HERE/opaque.sh" "${OPAQUE_ARGS[@]}" --raw "$RAW" \
      --targets "${OPAQUE_TARGETS# }" || log "warning: opaque.sh failed; report without it"
  else
    log "warning: the opaque rows need root (a network namespace): skipped"
    record '{"kind":"opaque-skip","target":"all","reason":"run.sh was not run as root"}'
  fi
fi

if [ "$MTLS" = 1 ]; then
  if [ "$(id -u)" = 0 ]; then
    log "mTLS hop: bench/mtls.sh, same run"
    SPOKE_BIN=$SPOKE_BIN "$HERE/mtls.sh" "${MTLS_ARGS[@]}" --raw "$RAW" ||
      log "warning: mtls.sh failed; report without it"
  else
    log "warning: the mTLS rows need root (a network namespace): skipped"
  fi
fi

mkdir -p "$HERE/results"
REPORT=$HERE/results/$(date -u +%Y-%m-%d).md
[ ! -e "$REPORT" ] || REPORT=$HERE/results/$(date -u +%Y-%m-%d-%H%M).md
python3 "$HERE/report.py" "$RAW" >"$REPORT"
cat "$REPORT"
log "report written to $REPORT"
