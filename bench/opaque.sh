#!/usr/bin/env bash
# bench/opaque.sh: opaque TCP through spoke, haproxy (mode tcp) and nginx (stream), against
# the same backend directly, in one run; and the first-byte latency of a server that speaks
# first (spoke's quiet period).
#
# Owns: the network namespace the rows run in, its iptables redirect, the configs, starting,
# pinning and stopping every process of this part, and the raw measurements. Neighbours:
# tcpbench.c (backend and load generator, compiled here with gcc), lib.sh (shared helpers),
# report.py (renders the "Opaque TCP" sections). run.sh calls this with --raw so that the
# HTTP and opaque rows land in one report; alone it writes bench/results/<date>-opaque.md.
#
# Layout: one namespace with only `lo`, created here and deleted on exit. The backend and
# the generator on CPU 0, every proxy on CPU 1, one loaded at a time. haproxy and nginx
# listen on ports of their own and forward to 127.0.0.1; spoke is reached the way a pod
# reaches it: the client connects to the backend's port on 127.0.0.2 and a nat OUTPUT rule
# (any uid but spoke's) redirects it to spoke's outbound listener, which reads the original
# destination and forwards there as opaque TCP (the bytes are not HTTP). A second spoke
# with a lower SPOKE_DETECT_QUIET_TIMEOUT sits behind 127.0.0.3 for the quiet-period rows.
#
# Usage: bench/opaque.sh [--quick] [--targets "direct haproxy nginx spoke"] [--no-install]
#                        [--keep] [--raw FILE]
# Env:   SPOKE_BIN, BENCH_OPAQUE_RUNS (3), BENCH_OPAQUE_DURATION (2),
#        BENCH_OPAQUE_CONNS (64), BENCH_OPAQUE_BULK_CONNS (16), BENCH_QUIET_SAMPLES (10),
#        BENCH_QUIET_LOW (50ms). Needs root (namespace, iptables); about 2 minutes.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

RUNS=${BENCH_OPAQUE_RUNS:-3}
DURATION=${BENCH_OPAQUE_DURATION:-2}
PP_CONNS=${BENCH_OPAQUE_CONNS:-64}
BULK_CONNS=${BENCH_OPAQUE_BULK_CONNS:-16}
QUIET_SAMPLES=${BENCH_QUIET_SAMPLES:-10}
QUIET_LOW=${BENCH_QUIET_LOW:-50ms}
SPOKE_BIN=${SPOKE_BIN:-${CARGO_TARGET_DIR:-/var/tmp/spoke-target}/release/spoke}
TARGETS="direct haproxy nginx spoke"
INSTALL=1
KEEP=0
RAW_OUT=""
PROXY_UID=2102 # spoke's uid: its own connections are not redirected

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) RUNS=1; DURATION=1; QUIET_SAMPLES=4; shift ;;
    --targets) TARGETS=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --keep) KEEP=1; shift ;;
    --raw) RAW_OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "opaque.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[ -n "${TARGETS// /}" ] || die "no opaque targets (--targets)"
for t in $TARGETS; do
  case "$t" in direct|haproxy|nginx|spoke) ;; *) die "unknown opaque target '$t'" ;; esac
done

# Ports inside the namespace (nothing outside it sees them, so no clash with the host).
SINK=7001 ECHO=7002 BANNER=7003
HA_BASE=7100 NG_BASE=7200 # +1 sink, +2 echo, +3 banner
SPOKE_OUT=4140 SPOKE_ADMIN=4191 SPOKE_IN=4143
QUIET_OUT=4240 QUIET_ADMIN=4291 QUIET_IN=4243
CLK_TCK=$(getconf CLK_TCK)

# ------------------------------------------------------------------ install

# The stream module: built in, or a dynamic module that Debian ships apart.
stream_module() { # prints the load_module line nginx needs (empty when built in)
  local v dir
  v=$(nginx -V 2>&1)
  case "$v" in
    *--with-stream=dynamic*)
      dir=$(sed -n 's/.*--modules-path=\([^ ]*\).*/\1/p' <<<"$v")
      echo "load_module ${dir:-/usr/lib/nginx/modules}/ngx_stream_module.so;" ;;
    *--with-stream\ *|*--with-stream) ;;
    *) return 1 ;;
  esac
}

need=()
command -v nginx >/dev/null || need+=(nginx libnginx-mod-stream)
if command -v nginx >/dev/null; then
  line=$(stream_module) || need+=(libnginx-mod-stream)
  [ -z "${line:-}" ] || [ -e "$(awk '{print $2}' <<<"${line%;}")" ] || need+=(libnginx-mod-stream)
fi
command -v haproxy >/dev/null || need+=(haproxy)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v iptables >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v setpriv >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  [ "$INSTALL" = 1 ] || die "missing: ${need[*]} (and --no-install given)"
  apt_install "${need[@]}"
fi
[ "$(id -u)" = 0 ] || die "needs root: it creates a network namespace with an iptables rule"
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (found $(nproc))"
STREAM_LOAD=$(stream_module) || die "this nginx has no stream module"

HAVE_SPOKE=0
if [[ " $TARGETS " == *" spoke "* ]]; then
  if [ -x "$SPOKE_BIN" ]; then HAVE_SPOKE=1
  else log "warning: no spoke binary at $SPOKE_BIN (build it, or set SPOKE_BIN): skipping spoke"
  fi
fi

# ------------------------------------------------------------------ processes

RUN=$(mktemp -d /tmp/spoke-opaque.XXXXXX)
chmod 755 "$RUN" # spoke runs as $PROXY_UID and reads its controller file here
mkdir -p "$RUN/logs" "$RUN/tmp"
RAW=${RAW_OUT:-$RUN/raw.jsonl}
[ -n "$RAW_OUT" ] || : >"$RAW"
NS=spoke-bench-$$
PIDS=()
NS_MADE=0

cleanup() { ns_cleanup; }
trap cleanup EXIT
trap 'exit 130' INT TERM

nsx() { ip netns exec "$NS" "$@"; }

# start NAME CPU CMD...: CMD in the namespace, pinned to CPU; sets $STARTED (its PID:
# `ip netns exec`, setpriv and taskset all exec, so the PID is the program's own).
start() {
  local name=$1 cpu=$2
  shift 2
  ip netns exec "$NS" taskset -c "$cpu" "$@" >"$RUN/logs/$name.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
}

# start_proxy_uid NAME CPU CMD...: the same, as the proxy uid (not redirected).
start_proxy_uid() {
  local name=$1 cpu=$2
  shift 2
  ip netns exec "$NS" setpriv --reuid "$PROXY_UID" --regid "$PROXY_UID" --clear-groups \
    taskset -c "$cpu" "$@" >"$RUN/logs/$name.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
}

alive() { # NAME PID: dies with the log when PID has exited
  kill -0 "$2" 2>/dev/null || { tail -20 "$RUN/logs/$1.log" >&2; die "$1 exited"; }
}

# wait_banner NAME PID ADDR: until a banner comes back through ADDR (5 s at most).
wait_banner() {
  local name=$1 pid=$2 addr=$3
  for _ in $(seq 50); do
    alive "$name" "$pid"
    nsx "$TB" banner --addr "$addr" --count 1 --timeout 1 >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  tail -20 "$RUN/logs/$name.log" >&2
  die "$name: no banner through $addr within 5 s"
}

# wait_ready NAME PID ADMIN_PORT: until spoke's /ready answers 200 (5 s at most).
wait_ready() {
  local name=$1 pid=$2 port=$3
  for _ in $(seq 100); do
    alive "$name" "$pid"
    [ "$(nsx curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready" 2>/dev/null)" \
      = 200 ] && return 0
    sleep 0.05
  done
  tail -20 "$RUN/logs/$name.log" >&2
  die "$name did not answer 200 on /ready within 5 s"
}

record() { printf '%s\n' "$1" >>"$RAW"; }

# ------------------------------------------------------------------ configs

write_nginx() {
  cat >"$RUN/nginx.conf" <<EOF
# nginx stream proxy: one process (the worker is the process measured), defaults otherwise,
# with the half-close carried across (proxy_half_close, as a transparent proxy must).
$STREAM_LOAD
worker_processes 1;
master_process off;
daemon off;
pid $RUN/nginx.pid;
error_log $RUN/logs/nginx.err warn;
events { worker_connections 4096; }
stream {
  proxy_half_close on;
  server { listen 127.0.0.1:$((NG_BASE + 1)); proxy_pass 127.0.0.1:$SINK; }
  server { listen 127.0.0.1:$((NG_BASE + 2)); proxy_pass 127.0.0.1:$ECHO; }
  server { listen 127.0.0.1:$((NG_BASE + 3)); proxy_pass 127.0.0.1:$BANNER; }
}
EOF
}

write_haproxy() {
  cat >"$RUN/haproxy.cfg" <<EOF
# haproxy: one thread, mode tcp, defaults otherwise (no splicing).
global
  nbthread 1
  maxconn 4096
  pidfile $RUN/haproxy.pid
defaults
  mode tcp
  timeout connect 1s
  timeout client 30s
  timeout server 30s
listen sink
  bind 127.0.0.1:$((HA_BASE + 1))
  server s1 127.0.0.1:$SINK
listen echo
  bind 127.0.0.1:$((HA_BASE + 2))
  server s1 127.0.0.1:$ECHO
listen banner
  bind 127.0.0.1:$((HA_BASE + 3))
  server s1 127.0.0.1:$BANNER
EOF
}

# spoke_env OUTBOUND ADMIN INBOUND [QUIET]: no destinations at all (IP targets need no
# discovery), listeners on 127.0.0.1.
spoke_env() {
  echo "SPOKE_CONTROLLER_CONFIG=$RUN/mesh.yaml" \
    "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR=127.0.0.1:$1" \
    "LINKERD2_PROXY_ADMIN_LISTEN_ADDR=127.0.0.1:$2" \
    "LINKERD2_PROXY_INBOUND_LISTEN_ADDR=127.0.0.1:$3" \
    "LINKERD2_PROXY_LOG=warn" \
    "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD=1s"
  [ -z "${4:-}" ] || echo "SPOKE_DETECT_QUIET_TIMEOUT=$4"
}

# addr TARGET PORT_OFFSET(1 sink, 2 echo, 3 banner): where the client connects.
addr() {
  local backend=$((7000 + $2))
  case "$1" in
    direct) echo "127.0.0.1:$backend" ;;
    haproxy) echo "127.0.0.1:$((HA_BASE + $2))" ;;
    nginx) echo "127.0.0.1:$((NG_BASE + $2))" ;;
    spoke) echo "127.0.0.2:$backend" ;;       # redirected to spoke
    spoke-quiet) echo "127.0.0.3:$backend" ;; # redirected to the second spoke
  esac
}

# ------------------------------------------------------------------ setup

TB=$RUN/tcpbench
gcc -O2 -Wall -o "$TB" "$HERE/tcpbench.c" || die "could not compile tcpbench.c"
chmod 755 "$TB"
ip netns add "$NS" || die "cannot create a network namespace (root in a container without CAP_SYS_ADMIN?)"
NS_MADE=1
ip -n "$NS" link set lo up
for spec in "127.0.0.2 $SPOKE_OUT" "127.0.0.3 $QUIET_OUT"; do
  read -r dst port <<<"$spec"
  nsx iptables -t nat -A OUTPUT -d "$dst/32" -p tcp -m owner ! --uid-owner "$PROXY_UID" \
    -j REDIRECT --to-ports "$port" || die "iptables in the namespace failed"
done
echo "# no documents: opaque IP targets need no discovery" >"$RUN/mesh.yaml"
chmod 644 "$RUN/mesh.yaml"

BUSY=$(busy_pct) # anything else on the CPUs (a cargo build) makes every number here noisy
[ "$BUSY" -le 5 ] || log "warning: the machine is ${BUSY}% busy before the opaque runs: numbers will be noisy"
record "{\"kind\":\"opaque-meta\",\"busy_before_pct\":$BUSY,\"date\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"runs\":$RUNS,\
\"duration_s\":$DURATION,\"pp_conns\":$PP_CONNS,\"bulk_conns\":$BULK_CONNS,\
\"quiet_samples\":$QUIET_SAMPLES,\"quiet_low\":\"$QUIET_LOW\",\"spoke_bin\":\"$SPOKE_BIN\",\
\"nginx\":\"$(nginx -v 2>&1 | sed 's/.*\///')\",\"haproxy\":\"$(haproxy -v | awk 'NR==1{print $3}')\",\
\"kernel\":\"$(uname -r)\",\"nproc\":$(nproc),\
\"cpu\":\"$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)\"}"

start backend 0 "$TB" serve --sink "$SINK" --echo "$ECHO" --banner "$BANNER"
BACKEND_PID=$STARTED
wait_banner backend "$BACKEND_PID" "$(addr direct 3)"
log "opaque: namespace $NS, backend (pid $BACKEND_PID, CPU 0)"

declare -A TPID
ACTIVE=()
for t in $TARGETS; do
  case "$t" in
    direct) TPID[direct]=- ;;
    haproxy)
      write_haproxy
      start haproxy 1 haproxy -db -f "$RUN/haproxy.cfg"
      TPID[haproxy]=$STARTED
      wait_banner haproxy "$STARTED" "$(addr haproxy 3)"
      ;;
    nginx)
      write_nginx
      start nginx 1 nginx -p "$RUN" -e "$RUN/logs/nginx.err" -c "$RUN/nginx.conf"
      TPID[nginx]=$STARTED
      wait_banner nginx "$STARTED" "$(addr nginx 3)"
      ;;
    spoke)
      [ "$HAVE_SPOKE" = 1 ] || continue
      # shellcheck disable=SC2046
      start_proxy_uid spoke 1 env $(spoke_env $SPOKE_OUT $SPOKE_ADMIN $SPOKE_IN) "$SPOKE_BIN"
      TPID[spoke]=$STARTED
      wait_ready spoke "$STARTED" $SPOKE_ADMIN
      # A client that speaks first: spoke must relay it (a spoke without opaque TCP answers
      # these bytes with a 400, and the row would measure nothing).
      if ! nsx "$TB" pingpong --addr "$(addr spoke 2)" --conns 1 --duration 0.2 --warmup 0 \
        >"$RUN/logs/spoke-probe.json" 2>&1; then
        log "warning: spoke did not relay opaque TCP (is opaque support in $SPOKE_BIN?):" \
          "$(cat "$RUN/logs/spoke-probe.json")"
        record "{\"kind\":\"opaque-skip\",\"target\":\"spoke\",\"reason\":\"no opaque relay from this binary\"}"
        unset 'TPID[spoke]' # still stopped on exit, with every PID started
        continue
      fi
      # shellcheck disable=SC2046
      start_proxy_uid spoke-quiet 1 env $(spoke_env $QUIET_OUT $QUIET_ADMIN $QUIET_IN "$QUIET_LOW") \
        "$SPOKE_BIN"
      TPID[spoke-quiet]=$STARTED
      wait_ready spoke-quiet "$STARTED" $QUIET_ADMIN
      ;;
  esac
  ACTIVE+=("$t")
done
log "opaque targets: ${ACTIVE[*]}"

# ------------------------------------------------------------------ measuring

# one TARGET CASE RUN_NO: one run of bulk / pingpong / rtt1 against TARGET, recorded with
# the proxy's and the backend's CPU ticks over it and the host steal.
one() {
  local target=$1 case=$2 n=$3 pid=${TPID[$1]} p0=0 p1=0 b0 b1 s0 s1 out rc=0
  # The 1-core case: the proxy joins the generator and backend on CPU 0, which takes the
  # cross-core wake-ups out of each hop (direct has none to take out: it is not run).
  if [ "$case" = rtt1-1core ]; then
    [ "$pid" != - ] || return 0
    taskset -a -p -c 0 "$pid" >/dev/null
  fi
  alive backend "$BACKEND_PID"
  [ "$pid" = - ] || alive "$target" "$pid"
  s0=$(steal)
  b0=$(ticks "$BACKEND_PID")
  [ "$pid" = - ] || p0=$(ticks "$pid")
  case "$case" in
    bulk) out=$(nsx taskset -c 0 "$TB" bulk --addr "$(addr "$target" 1)" --conns "$BULK_CONNS" \
      --duration "$DURATION") || rc=$? ;;
    pingpong) out=$(nsx taskset -c 0 "$TB" pingpong --addr "$(addr "$target" 2)" \
      --conns "$PP_CONNS" --duration "$DURATION" --warmup 0.5) || rc=$? ;;
    rtt1|rtt1-1core) out=$(nsx taskset -c 0 "$TB" pingpong --addr "$(addr "$target" 2)" \
      --conns 1 --duration "$DURATION" --warmup 0.5) || rc=$? ;;
  esac
  [ "$pid" = - ] || p1=$(ticks "$pid")
  b1=$(ticks "$BACKEND_PID")
  s1=$(steal)
  [ "$case" != rtt1-1core ] || taskset -a -p -c 1 "$pid" >/dev/null
  [ -n "$out" ] || die "tcpbench $case against $target printed nothing"
  [ "$rc" = 0 ] || log "  warning: $target $case run $n had errors: $out"
  log "  $target $case run $n: $(python3 -c 'import json,sys; r=json.loads(sys.argv[1])
print("%.0f MiB/s" % r["mib_per_s"] if "mib_per_s" in r else
      "%.0f round trips/s, p50 %.0f µs, p99 %.0f µs" % (r["rt_per_s"], r["p50_us"], r["p99_us"]))' "$out"),\
 proxy $((p1 - p0)) ticks"
  record "{\"kind\":\"opaque\",\"case\":\"$case\",\"target\":\"$target\",\"run\":$n,\
\"cpu_ticks\":$((p1 - p0)),\"backend_ticks\":$((b1 - b0)),\"clk_tck\":$CLK_TCK,\
\"has_proxy\":$([ "$pid" = - ] && echo false || echo true),$(steal_json "$s0" "$s1"),\
\"result\":$out}"
}

for t in "${ACTIVE[@]}"; do # warm-up: connections, caches
  nsx taskset -c 0 "$TB" pingpong --addr "$(addr "$t" 2)" --conns "$PP_CONNS" --duration 0.5 \
    --warmup 0 >/dev/null || true
done

log "opaque: $RUNS rounds of bulk, ping-pong ($PP_CONNS connections), ping-pong (1) on 2" \
  "cores and on 1, ${DURATION}s each, targets in turn"
count=${#ACTIVE[@]}
cycle=0
for n in $(seq "$RUNS"); do
  for case in bulk pingpong rtt1 rtt1-1core; do
    # Start one target later every time, so that no target always follows the same one.
    for i in $(seq 0 $((count - 1))); do
      one "${ACTIVE[$(((i + cycle) % count))]}" "$case" "$n"
    done
    cycle=$((cycle + 1))
  done
done

# Server speaks first: connect, say nothing, time the banner's first byte.
banner_row() { # TARGET QUIET_LABEL
  local out
  out=$(nsx taskset -c 0 "$TB" banner --addr "$(addr "$1" 3)" --count "$QUIET_SAMPLES" \
    --timeout 15 --budget 30) || true
  [ -n "$out" ] || die "tcpbench banner against $1 printed nothing"
  log "  $1 banner (${2:-no quiet period}): $(python3 -c 'import json,sys; r=json.loads(sys.argv[1])
print("median %.1f ms, min %.1f, max %.1f, %d of %d" % (r["median_us"] / 1e3, r["min_us"] / 1e3,
      r["max_us"] / 1e3, r["ok"], r["tried"]))' "$out")"
  record "{\"kind\":\"opaque-banner\",\"target\":\"$1\",\"quiet\":\"$2\",\"result\":$out}"
}
log "opaque: server speaks first, $QUIET_SAMPLES connections per target"
for t in "${ACTIVE[@]}"; do
  case "$t" in
    spoke)
      banner_row spoke 300ms
      banner_row spoke-quiet "$QUIET_LOW"
      ;;
    *) banner_row "$t" "" ;;
  esac
done

for t in "${!TPID[@]}"; do
  pid=${TPID[$t]}
  [ "$pid" = - ] && continue
  record "{\"kind\":\"opaque-mem\",\"target\":\"$t\",\"hwm_kib\":$(awk '/^VmHWM:/{print $2}' \
"/proc/$pid/status"),\"rss_kib\":$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status")}"
done
for spec in "spoke $SPOKE_ADMIN" "spoke-quiet $QUIET_ADMIN"; do
  read -r t port <<<"$spec"
  [ -n "${TPID[$t]:-}" ] || continue
  detect=$(nsx curl -s "http://127.0.0.1:$port/metrics" | grep '^spoke_detect_total' || true)
  record "{\"kind\":\"opaque-detect\",\"target\":\"$t\",\"lines\":$(python3 -c \
'import json,sys; print(json.dumps(sys.stdin.read().splitlines()))' <<<"$detect")}"
done

if [ -z "$RAW_OUT" ]; then
  mkdir -p "$HERE/results"
  REPORT=$HERE/results/$(date -u +%Y-%m-%d-%H%M)-opaque.md
  python3 "$HERE/report.py" "$RAW" >"$REPORT"
  cat "$REPORT"
  log "report written to $REPORT"
fi
