# shellcheck shell=bash
# bench/lib.sh: helpers the bench scripts share (sourced, not run).
#
# Owns: the log format, the Debian install of missing tools (with service starts refused),
# and the two /proc readings every benchmark row is built from (a process's CPU ticks, the
# host's steal time). No process is started here.

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# apt_install PKG...: installs the packages with apt-get (sudo when not root). Package
# scripts must not start system nginx/haproxy services on ports of their own: service starts
# are refused for the duration of the install unless a policy already exists, and only a
# policy made here is removed again.
apt_install() {
  [ $# -gt 0 ] || return 0
  local sudo="" policy=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  log "installing $* with apt-get"
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "$@" >/dev/null
  [ -z "$policy" ] || $sudo rm -f "$policy"
  return 0
}

ticks() { # utime+stime of a process (all threads), in clock ticks
  local stat
  stat=$(cat "/proc/$1/stat")
  stat=${stat##*) }
  awk '{print $12 + $13}' <<<"$stat"
}

steal() { # host steal time of CPU 0 and CPU 1 so far, in clock ticks: "cpu0 cpu1"
  awk '/^cpu0 /{a=$9} /^cpu1 /{b=$9} END{print a, b}' /proc/stat
}

# steal_json BEFORE AFTER: the steal of both CPUs between two `steal` readings, as JSON fields.
steal_json() {
  local a0 a1 b0 b1
  read -r a0 a1 <<<"$1"
  read -r b0 b1 <<<"$2"
  printf '"steal_ticks_cpu0":%s,"steal_ticks_cpu1":%s' $((b0 - a0)) $((b1 - a1))
}

# busy_pct: how busy the CPUs were over 2 s, in percent (from /proc/stat).
busy_pct() {
  local a b
  read -r -a a </proc/stat
  sleep 2
  read -r -a b </proc/stat
  local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}

# ns_cleanup: what each script (run.sh, opaque.sh, mtls.sh) does on exit: stop every PID in
# PIDS (TERM, then KILL after 3 s), delete namespace NS if NS_MADE (set it to 0 without one),
# and remove RUN unless KEEP=1.
ns_cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  [ "$NS_MADE" = 0 ] || ip netns del "$NS" 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then log "kept $RUN"; else rm -rf "$RUN"; fi
}

# nginx_head NAME [CONNS]: what every nginx config of the bench shares (CONNS: worker
# connections, 4096 unless given): one process (master_process off, so
# the worker *is* the process measured), no logging, keep-alive to clients. Leaves the
# `http` block open.
nginx_head() {
  cat <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $RUN/$1.pid;
error_log $RUN/logs/$1.err warn;
events { worker_connections ${2:-4096}; }
http {
  access_log off;
  client_body_temp_path $RUN/tmp; proxy_temp_path $RUN/tmp; fastcgi_temp_path $RUN/tmp;
  uwsgi_temp_path $RUN/tmp; scgi_temp_path $RUN/tmp;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
EOF
}

# Process helpers for scripts that keep their started PIDs in the array PIDS and
# their logs under $RUN/logs.
# start NAME CPU CMD... : starts CMD pinned to CPU, logs to $RUN/logs/NAME.log; sets $STARTED.
start() {
  local name=$1 cpu=$2
  shift 2
  taskset -c "$cpu" "$@" >"$RUN/logs/$name.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
}

# stop PID: SIGTERM, then SIGKILL after 3 s.
stop() {
  local pid=$1 p keep=()
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# spoke_plain_env YAML OUTBOUND_PORT ADMIN_PORT INBOUND_PORT: the environment assignments for
# a spoke on loopback served by its embedded controller from YAML, logging warnings only.
spoke_plain_env() {
  echo "SPOKE_CONTROLLER_CONFIG=$1" \
    "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR=127.0.0.1:$2" \
    "LINKERD2_PROXY_ADMIN_LISTEN_ADDR=127.0.0.1:$3" \
    "LINKERD2_PROXY_INBOUND_LISTEN_ADDR=127.0.0.1:$4" \
    "LINKERD2_PROXY_LOG=warn" \
    "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD=1s" \
    "LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT=10m"
}

# haproxy_h2_cfg PORT BACKEND_PORT [PIDFILE]: the haproxy config of h2.sh and cost_h2.sh, one
# thread, HTTP/2 on both sides (proto h2 on bind and server), server connections shared
# between streams and clients (http-reuse always).
haproxy_h2_cfg() {
  echo "global"
  echo "  nbthread 1"
  echo "  maxconn 8192"
  [ -n "${3:-}" ] && echo "  pidfile $3"
  cat <<EOF
defaults
  mode http
  http-reuse always
  timeout connect 1s
  timeout client 300s
  timeout server 300s
frontend fe
  bind 127.0.0.1:$1 proto h2
  default_backend be
backend be
  server s1 127.0.0.1:$2 proto h2
EOF
}
