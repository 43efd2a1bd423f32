#!/usr/bin/env bash
# bench/mtls.sh: the cost of a proxy-to-proxy hop over mTLS against the same hop in
# plaintext, for a pair of spokes and a pair of nginx, in one run: keep-alive requests/s
# and CPU µs per request summed over both proxies, and new connections (each a full TLS
# handshake at the hop) per second.
#
# Owns: the network namespace the rows run in, its iptables redirect, the test CA and the
# nginx certificates, the configs, starting, pinning and stopping every process of this
# part, and the raw measurements. Neighbours: lib.sh (shared helpers), report_mtls.py (the
# Markdown report). run.sh calls this with --raw when given --mtls; alone it writes
# bench/results/<date>-<time>-mtls.md.
#
# Layout: one namespace with only `lo`, created here and deleted on exit. The backend
# (nginx, fixed 200) and wrk on CPU 0; both proxies of each pair on CPU 1, one pair loaded
# at a time. `spoke controller` (CPU 0, idle while measuring) holds the CA (made here with
# openssl, so the nginx certificates come from the same CA) and certifies spoke A
# (`web`) and spoke B (`books`). wrk talks to spoke A's outbound listener with the Host of
# a service whose endpoint is 127.0.0.2:<port>; a nat OUTPUT rule sends every connection to
# 127.0.0.2 that is not spoke B's own to spoke B's inbound listener, which reads the
# original destination and forwards there (the backend listens on 0.0.0.0). The meshed
# service's Endpoints carry `identity:` (A speaks mTLS to B), the plaintext one's do not.
#
# Usage: bench/mtls.sh [--quick] [--no-install] [--keep] [--raw FILE] [--rows "ROW..."]
#        (rows: spoke-plain spoke-mtls spoke-mtls-h1 nginx-plain nginx-tls and the -new forms
#        of all but spoke-mtls-h1; all by
#        default; fewer, e.g. to profile one row with `perf record -C 1` beside it)
# Env:   SPOKE_BIN, BENCH_MTLS_RUNS (3), BENCH_MTLS_DURATION (10), BENCH_MTLS_SLICE (2),
#        BENCH_MTLS_CONNS (64). Needs root (namespace, iptables); about 5 minutes.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

RUNS=${BENCH_MTLS_RUNS:-3}
DURATION=${BENCH_MTLS_DURATION:-10}
SLICE=${BENCH_MTLS_SLICE:-2}
CONNS=${BENCH_MTLS_CONNS:-64}
SPOKE_BIN=${SPOKE_BIN:-${CARGO_TARGET_DIR:-/var/tmp/spoke-target}/release/spoke}
INSTALL=1
KEEP=0
RAW_OUT=""
ROWS=""
A_UID=2102 # spoke A (and A-new): its connections to 127.0.0.2 are redirected to B
B_UID=2103 # spoke B: its own connections to 127.0.0.2 are not

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) RUNS=1; DURATION=2; SLICE=2; shift ;;
    --no-install) INSTALL=0; shift ;;
    --keep) KEEP=1; shift ;;
    --raw) RAW_OUT=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "mtls.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "$DURATION$SLICE" in *[!0-9]*) die "BENCH_MTLS_DURATION and _SLICE are whole seconds" ;; esac
[ "$SLICE" -ge 1 ] && [ $((DURATION % SLICE)) -eq 0 ] || die "the slice must divide the duration"
SLICES=$((DURATION / SLICE))

# Ports inside the namespace (nothing outside it sees them).
BACKEND_MESHED=7000 BACKEND_PLAIN=7001 # the backend on both; services books / plain
CTL=8086
A_OUT=4140 A_ADMIN=4191 A_IN=4143         # spoke A, pooled upstream connections
AN_OUT=4340 AN_ADMIN=4391 AN_IN=4343      # spoke A-new: no idle upstream connections kept
AH_OUT=4440 AH_ADMIN=4491 AH_IN=4443      # spoke A-h1: HTTP/1 to B, not upgraded to HTTP/2
B_OUT=4240 B_ADMIN=4291 B_IN=4243         # spoke B, behind the redirect
NA_PLAIN=7301 NA_TLS=7302 NA_TLS_NEW=7303 NA_PLAIN_NEW=7304 # nginx A's servers
NB_PLAIN=7311 NB_TLS=7312                 # nginx B's
CLK_TCK=$(getconf CLK_TCK)
WEB=web.default.serviceaccount.identity.linkerd.cluster.local
BOOKS=books.default.serviceaccount.identity.linkerd.cluster.local
MESHED_HOST="Host: books.default.svc.cluster.local:7000"
PLAIN_HOST="Host: plain.default.svc.cluster.local:7000"
# Linkerd's TLS 1.3 suites and groups, in spoke's order (src/tls/config.rs), for nginx too.
SUITES=TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
TLS_GROUPS=X25519:P-256:P-384

# ------------------------------------------------------------------ install

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
command -v openssl >/dev/null || need+=(openssl)
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
HAVE_SPOKE=1
if [ ! -x "$SPOKE_BIN" ]; then
  HAVE_SPOKE=0
  log "warning: no spoke binary at $SPOKE_BIN (build it, or set SPOKE_BIN): nginx rows only"
fi

# ------------------------------------------------------------------ processes

RUN=$(mktemp -d /tmp/spoke-mtls.XXXXXX)
chmod 755 "$RUN" # the spokes run as their own uids and read their token files here
mkdir -p "$RUN/logs" "$RUN/tmp" "$RUN/pki"
RAW=${RAW_OUT:-$RUN/raw.jsonl}
[ -n "$RAW_OUT" ] || : >"$RAW"
NS=spoke-mtls-$$
PIDS=()
NS_MADE=0

cleanup() { ns_cleanup; }
trap cleanup EXIT
trap 'exit 130' INT TERM

nsx() { ip netns exec "$NS" "$@"; }

# start NAME CPU UID CMD...: CMD in the namespace, pinned to CPU, as UID (- for root); sets
# $STARTED (its PID: `ip netns exec`, setpriv and taskset all exec).
start() {
  local name=$1 cpu=$2 uid=$3
  shift 3
  if [ "$uid" = - ]; then
    ip netns exec "$NS" taskset -c "$cpu" "$@" >"$RUN/logs/$name.log" 2>&1 &
  else
    ip netns exec "$NS" setpriv --reuid "$uid" --regid "$uid" --clear-groups \
      taskset -c "$cpu" "$@" >"$RUN/logs/$name.log" 2>&1 &
  fi
  STARTED=$!
  PIDS+=("$STARTED")
}

alive() { # NAME PID: dies with the log when PID has exited
  kill -0 "$2" 2>/dev/null || { tail -20 "$RUN/logs/$1.log" >&2; die "$1 exited"; }
}

# wait_200 NAME PID URL [HOST]: until URL answers 200 (10 s at most).
wait_200() {
  local name=$1 pid=$2 url=$3 host=${4:-Host: x}
  for _ in $(seq 200); do
    alive "$name" "$pid"
    [ "$(nsx curl -s -o /dev/null -w '%{http_code}' -H "$host" "$url" 2>/dev/null)" = 200 ] &&
      return 0
    sleep 0.05
  done
  tail -20 "$RUN/logs/$name.log" >&2
  die "$name did not answer 200 on $url within 10 s"
}

record() { printf '%s\n' "$1" >>"$RAW"; }

# ------------------------------------------------------------------ certificates

# One ECDSA P-256 CA; spoke's leaves come from the controller holding it, nginx's are
# signed here with the same key and the same kind of name (a SAN DNS identity).
pki() {
  local d=$RUN/pki
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$d/ca.key" -subj "/CN=bench mtls CA" -days 2 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,digitalSignature" \
    -out "$d/ca.pem" 2>/dev/null
  local who name
  for who in web books; do
    [ "$who" = web ] && name=$WEB || name=$BOOKS
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/$who.key" 2>/dev/null
    openssl req -new -key "$d/$who.key" -subj "/CN=$name" -out "$d/$who.csr" 2>/dev/null
    printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n' \
      "$name" >"$d/$who.ext"
    openssl x509 -req -in "$d/$who.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
      -days 2 -extfile "$d/$who.ext" -out "$d/$who.pem" 2>/dev/null
  done
  chmod 644 "$d"/*
}

# ------------------------------------------------------------------ configs


write_backend() {
  { nginx_head backend 8192; cat <<EOF
  server {
    listen $BACKEND_MESHED; listen $BACKEND_PLAIN;
    location / { return 200 "ok\n"; }
  }
}
EOF
  } >"$RUN/backend.conf"
}

# nginx A: four servers, each proxying to nginx B: plaintext and TLS, each with a keep-alive
# upstream and without one (a new connection per request, so a full handshake per request
# over TLS: session reuse is off, as spoke has no resumption).
write_nginx_a() {
  local d=$RUN/pki
  { nginx_head nginx-a 8192; cat <<EOF
  upstream b_plain { server 127.0.0.1:$NB_PLAIN; keepalive 128; keepalive_requests 10000000; }
  upstream b_tls { server 127.0.0.1:$NB_TLS; keepalive 128; keepalive_requests 10000000; }
  upstream b_plain_new { server 127.0.0.1:$NB_PLAIN; }
  upstream b_tls_new { server 127.0.0.1:$NB_TLS; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host \$http_host;
  proxy_ssl_certificate $d/web.pem;
  proxy_ssl_certificate_key $d/web.key;
  proxy_ssl_trusted_certificate $d/ca.pem;
  proxy_ssl_verify on;
  proxy_ssl_verify_depth 2;
  proxy_ssl_name $BOOKS;
  proxy_ssl_server_name on;
  proxy_ssl_protocols TLSv1.3;
  proxy_ssl_session_reuse off;
  proxy_ssl_conf_command Ciphersuites $SUITES;
  proxy_ssl_conf_command Groups $TLS_GROUPS;
  server { listen 127.0.0.1:$NA_PLAIN; location / { proxy_pass http://b_plain; } }
  server { listen 127.0.0.1:$NA_TLS; location / { proxy_pass https://b_tls; } }
  server { listen 127.0.0.1:$NA_PLAIN_NEW; location / { proxy_pass http://b_plain_new; } }
  server { listen 127.0.0.1:$NA_TLS_NEW; location / { proxy_pass https://b_tls_new; } }
}
EOF
  } >"$RUN/nginx-a.conf"
}

# nginx B: terminates TLS and requires a client certificate from the CA; both servers keep
# their connections to the backend alive.
write_nginx_b() {
  local d=$RUN/pki
  { nginx_head nginx-b 8192; cat <<EOF
  upstream backend { server 127.0.0.1:$BACKEND_MESHED; keepalive 128; keepalive_requests 10000000; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host \$http_host;
  server { listen 127.0.0.1:$NB_PLAIN; location / { proxy_pass http://backend; } }
  server {
    listen 127.0.0.1:$NB_TLS ssl;
    ssl_certificate $d/books.pem;
    ssl_certificate_key $d/books.key;
    ssl_client_certificate $d/ca.pem;
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_protocols TLSv1.3;
    ssl_session_tickets off;
    ssl_session_cache off;
    ssl_conf_command Ciphersuites $SUITES;
    ssl_conf_command Groups $TLS_GROUPS;
    location / { proxy_pass http://backend; }
  }
}
EOF
  } >"$RUN/nginx-b.conf"
}

# The controller's file: both identities with their tokens, and the two services, both at
# 127.0.0.2 (redirected to spoke B): books with spoke B's identity (mTLS), plain without.
write_mesh() {
  local who
  for who in web books; do
    printf -- '---\napiVersion: spoke.dev/v1alpha1\nkind: Identity\nmetadata:\n  name: %s\nspec:\n  token: token-of-%s\n' \
      "$([ "$who" = web ] && echo "$WEB" || echo "$BOOKS")" "$who"
    printf 'token-of-%s' "$who" >"$RUN/$who.token"
  done >"$RUN/mesh.yaml"
  cat >>"$RUN/mesh.yaml" <<EOF
---
apiVersion: spoke.dev/v1alpha1
kind: Endpoints
metadata:
  name: books.default.svc.cluster.local
spec:
  ports:
  - port: 7000
    identity: $BOOKS
    addresses:
    - 127.0.0.2:$BACKEND_MESHED
---
apiVersion: spoke.dev/v1alpha1
kind: Endpoints
metadata:
  name: plain.default.svc.cluster.local
spec:
  ports:
  - port: 7000
    addresses:
    - 127.0.0.2:$BACKEND_PLAIN
EOF
  chmod 644 "$RUN/mesh.yaml" "$RUN"/*.token
}

# spoke_env WHO OUT ADMIN IN [MORE...]: a spoke certified as WHO by the controller.
spoke_env() {
  local who=$1 name
  [ "$who" = web ] && name=$WEB || name=$BOOKS
  SPOKE_ENV=(
    "LINKERD2_PROXY_DESTINATION_SVC_ADDR=127.0.0.1:$CTL"
    "LINKERD2_PROXY_IDENTITY_SVC_ADDR=127.0.0.1:$CTL"
    "LINKERD2_PROXY_IDENTITY_LOCAL_NAME=$name"
    "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS=$(cat "$RUN/pki/ca.pem")"
    "LINKERD2_PROXY_IDENTITY_TOKEN_FILE=$RUN/$who.token"
    "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR=127.0.0.1:$2"
    "LINKERD2_PROXY_ADMIN_LISTEN_ADDR=127.0.0.1:$3"
    "LINKERD2_PROXY_INBOUND_LISTEN_ADDR=127.0.0.1:$4"
    "LINKERD2_PROXY_LOG=warn"
    "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD=1s"
    "LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT=10m"
  )
  shift 4
  SPOKE_ENV+=("$@")
}

# ------------------------------------------------------------------ setup

ip netns add "$NS" || die "cannot create a network namespace (root in a container without CAP_SYS_ADMIN?)"
NS_MADE=1
ip -n "$NS" link set lo up
nsx iptables -t nat -A OUTPUT -d 127.0.0.2/32 -p tcp -m owner ! --uid-owner "$B_UID" \
  -j REDIRECT --to-ports "$B_IN" || die "iptables in the namespace failed"
# The new-connection rows open thousands of connections a second: a wide port range, and
# conntrack forgetting closed ones soon (its table is shared with the host). Both settings
# belong to this namespace only.
nsx sysctl -qw net.ipv4.ip_local_port_range="10000 65000"
nsx sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_time_wait=2 2>/dev/null ||
  log "warning: cannot shorten conntrack's TIME_WAIT in the namespace"

pki
write_backend
write_nginx_a
write_nginx_b
write_mesh

BUSY=$(busy_pct)
[ "$BUSY" -le 5 ] || log "warning: the machine is ${BUSY}% busy before the mTLS runs: numbers will be noisy"
record "{\"kind\":\"mtls-meta\",\"busy_before_pct\":$BUSY,\"date\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"runs\":$RUNS,\
\"duration_s\":$DURATION,\"slice_s\":$SLICE,\"conns\":$CONNS,\"spoke_bin\":\"$SPOKE_BIN\",\
\"nginx\":\"$(nginx -v 2>&1 | sed 's/.*\///')\",\"openssl\":\"$(openssl version | awk '{print $2}')\",\
\"kernel\":\"$(uname -r)\",\"nproc\":$(nproc),\
\"cpu\":\"$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)\"}"

start backend 0 - nginx -p "$RUN" -e "$RUN/logs/backend.err" -c "$RUN/backend.conf"
BACKEND_PID=$STARTED
wait_200 backend "$BACKEND_PID" "http://127.0.0.1:$BACKEND_MESHED/"
start nginx-b 1 - nginx -p "$RUN" -e "$RUN/logs/nginx-b.err" -c "$RUN/nginx-b.conf"
NB_PID=$STARTED
start nginx-a 1 - nginx -p "$RUN" -e "$RUN/logs/nginx-a.err" -c "$RUN/nginx-a.conf"
NA_PID=$STARTED
wait_200 nginx-a "$NA_PID" "http://127.0.0.1:$NA_TLS/"
wait_200 nginx-a "$NA_PID" "http://127.0.0.1:$NA_TLS_NEW/"

# target -> "PORT|HOST|PID_A PID_B"
declare -A T
ACTIVE=()
HS=()
T[nginx-plain]="$NA_PLAIN|Host: x|$NA_PID $NB_PID"
T[nginx-tls]="$NA_TLS|Host: x|$NA_PID $NB_PID"
T[nginx-plain-new]="$NA_PLAIN_NEW|Host: x|$NA_PID $NB_PID"
T[nginx-tls-new]="$NA_TLS_NEW|Host: x|$NA_PID $NB_PID"

if [ "$HAVE_SPOKE" = 1 ]; then
  start controller 0 - env "SPOKE_CONTROLLER_IDENTITY_ISSUER_CERT=$RUN/pki/ca.pem" \
    "SPOKE_CONTROLLER_IDENTITY_ISSUER_KEY=$RUN/pki/ca.key" LINKERD2_PROXY_LOG=warn \
    "$SPOKE_BIN" controller --config "$RUN/mesh.yaml" --listen "127.0.0.1:$CTL"
  CTL_PID=$STARTED
  for _ in $(seq 100); do
    alive controller "$CTL_PID"
    grep -q 'serving' "$RUN/logs/controller.log" && break
    sleep 0.05
  done
  spoke_env books $B_OUT $B_ADMIN $B_IN
  start spoke-b 1 "$B_UID" env "${SPOKE_ENV[@]}" "$SPOKE_BIN"
  SB_PID=$STARTED
  spoke_env web $A_OUT $A_ADMIN $A_IN
  start spoke-a 1 "$A_UID" env "${SPOKE_ENV[@]}" "$SPOKE_BIN"
  SA_PID=$STARTED
  # HTTP/1 kept: an upgraded request would share one HTTP/2 connection to B.
  spoke_env web $AN_OUT $AN_ADMIN $AN_IN LINKERD2_PROXY_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT=0 \
    SPOKE_OUTBOUND_ORIG_PROTO_UPGRADE=off
  start spoke-a-new 1 "$A_UID" env "${SPOKE_ENV[@]}" "$SPOKE_BIN"
  SAN_PID=$STARTED
  spoke_env web $AH_OUT $AH_ADMIN $AH_IN SPOKE_OUTBOUND_ORIG_PROTO_UPGRADE=off
  start spoke-a-h1 1 "$A_UID" env "${SPOKE_ENV[@]}" "$SPOKE_BIN"
  SAH_PID=$STARTED
  for spec in "spoke-b $SB_PID $B_ADMIN" "spoke-a $SA_PID $A_ADMIN" "spoke-a-new $SAN_PID $AN_ADMIN" \
    "spoke-a-h1 $SAH_PID $AH_ADMIN"; do
    read -r name pid port <<<"$spec"
    wait_200 "$name" "$pid" "http://127.0.0.1:$port/ready"
  done
  wait_200 spoke-a "$SA_PID" "http://127.0.0.1:$A_OUT/" "$MESHED_HOST"
  wait_200 spoke-a "$SA_PID" "http://127.0.0.1:$A_OUT/" "$PLAIN_HOST"
  wait_200 spoke-a-new "$SAN_PID" "http://127.0.0.1:$AN_OUT/" "$MESHED_HOST"
  wait_200 spoke-a-h1 "$SAH_PID" "http://127.0.0.1:$AH_OUT/" "$MESHED_HOST"
  T[spoke-plain]="$A_OUT|$PLAIN_HOST|$SA_PID $SB_PID"
  T[spoke-mtls]="$A_OUT|$MESHED_HOST|$SA_PID $SB_PID"
  T[spoke-mtls-h1]="$AH_OUT|$MESHED_HOST|$SAH_PID $SB_PID"
  T[spoke-plain-new]="$AN_OUT|$PLAIN_HOST|$SAN_PID $SB_PID"
  T[spoke-mtls-new]="$AN_OUT|$MESHED_HOST|$SAN_PID $SB_PID"
  ACTIVE+=(spoke-plain spoke-mtls spoke-mtls-h1)
  HS+=(spoke-plain-new spoke-mtls-new)
fi
ACTIVE+=(nginx-plain nginx-tls)
HS+=(nginx-plain-new nginx-tls-new)
if [ -n "$ROWS" ]; then # only the rows asked for
  for r in $ROWS; do [ -n "${T[$r]:-}" ] || die "unknown or unavailable row '$r'"; done
  keep() { local t; for t in "$@"; do [[ " $ROWS " != *" $t "* ]] || echo "$t"; done; }
  mapfile -t ACTIVE < <(keep "${ACTIVE[@]}")
  mapfile -t HS < <(keep "${HS[@]}")
fi
# What each TLS server negotiates with an OpenSSL client offering spoke's suites and groups
# and presenting the `web` certificate (nginx A is such a client; spoke A offers the same).
tls_probe() { # NAME ADDR
  local out
  out=$(nsx timeout 5 openssl s_client -connect "$2" -servername "$BOOKS" -tls1_3 \
    -ciphersuites "$SUITES" -groups "$TLS_GROUPS" -cert "$RUN/pki/web.pem" \
    -key "$RUN/pki/web.key" -CAfile "$RUN/pki/ca.pem" -verify_return_error -brief \
    </dev/null 2>&1 || true)
  record "{\"kind\":\"mtls-tls\",\"target\":\"$1\",\"lines\":$(python3 -c \
'import json,sys; print(json.dumps([l for l in sys.stdin.read().splitlines()
  if l.split(":")[0].strip() in ("Protocol version", "Ciphersuite", "Peer signature type",
  "Server Temp Key", "Verification", "Peer certificate")]))' <<<"$out")}"
}
tls_probe nginx-b "127.0.0.1:$NB_TLS"
[ "$HAVE_SPOKE" = 0 ] || tls_probe spoke-b "127.0.0.2:$BACKEND_MESHED" # redirected to B

log "mtls: namespace $NS; keep-alive rows: ${ACTIVE[*]}; new-connection rows: ${HS[*]}"

# ------------------------------------------------------------------ measuring

declare -A SUM_REQS SUM_SECS SUM_TA SUM_TB SUM_BK SUM_NON2XX SUM_SOCKERR SUM_STEAL0 SUM_STEAL1

# slice TARGET: one wrk slice of $SLICE seconds, keep-alive from wrk to proxy A, adding
# its requests, seconds, both proxies' CPU ticks, errors and steal to the target's totals.
slice() {
  local t=$1 port host pids pa pb a0 a1 b0 b1 k0 k1 s0 s1 out
  IFS='|' read -r port host pids <<<"${T[$t]}"
  read -r pa pb <<<"$pids"
  alive "$t" "$pa"; alive "$t" "$pb"
  s0=$(steal); a0=$(ticks "$pa"); b0=$(ticks "$pb"); k0=$(ticks "$BACKEND_PID")
  out=$(nsx taskset -c 0 wrk -t1 -c"$CONNS" -d"${SLICE}s" -H "$host" "http://127.0.0.1:$port/")
  a1=$(ticks "$pa"); b1=$(ticks "$pb"); k1=$(ticks "$BACKEND_PID"); s1=$(steal)
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
  SUM_REQS[$t]=$((${SUM_REQS[$t]:-0} + reqs))
  SUM_SECS[$t]=$(awk -v a="${SUM_SECS[$t]:-0}" -v b="${secs%s}" 'BEGIN{print a + b}')
  SUM_TA[$t]=$((${SUM_TA[$t]:-0} + a1 - a0))
  SUM_TB[$t]=$((${SUM_TB[$t]:-0} + b1 - b0))
  SUM_BK[$t]=$((${SUM_BK[$t]:-0} + k1 - k0))
  SUM_NON2XX[$t]=$((${SUM_NON2XX[$t]:-0} + ${non2xx:-0}))
  SUM_SOCKERR[$t]=$((${SUM_SOCKERR[$t]:-0} + sockerr))
  SUM_STEAL0[$t]=$((${SUM_STEAL0[$t]:-0} + sa1 - sa0))
  SUM_STEAL1[$t]=$((${SUM_STEAL1[$t]:-0} + sb1 - sb0))
}

# run_record TARGET RUN_NO KIND: the slices summed since the last call as one run.
run_record() {
  local t=$1 n=$2 kind=$3 rps
  rps=$(awk -v r="${SUM_REQS[$t]}" -v s="${SUM_SECS[$t]}" 'BEGIN{printf "%.2f", (s > 0 ? r / s : 0)}')
  log "  $t run $n: $rps req/s, CPU ticks A ${SUM_TA[$t]} + B ${SUM_TB[$t]}," \
    "errors ${SUM_NON2XX[$t]}+${SUM_SOCKERR[$t]}"
  record "{\"kind\":\"mtls\",\"case\":\"$kind\",\"target\":\"$t\",\"run\":$n,\"rps\":$rps,\
\"requests\":${SUM_REQS[$t]},\"seconds\":${SUM_SECS[$t]},\"ticks_a\":${SUM_TA[$t]},\
\"ticks_b\":${SUM_TB[$t]},\"ticks_backend\":${SUM_BK[$t]},\"clk_tck\":$CLK_TCK,\
\"non2xx\":${SUM_NON2XX[$t]},\"socket_errors\":${SUM_SOCKERR[$t]},\
\"steal_ticks_cpu0\":${SUM_STEAL0[$t]},\"steal_ticks_cpu1\":${SUM_STEAL1[$t]}}"
  SUM_REQS[$t]=0; SUM_SECS[$t]=0; SUM_TA[$t]=0; SUM_TB[$t]=0; SUM_BK[$t]=0
  SUM_NON2XX[$t]=0; SUM_SOCKERR[$t]=0; SUM_STEAL0[$t]=0; SUM_STEAL1[$t]=0
}

# rounds KIND TARGETS...: RUNS runs of SLICES slices each, the targets interleaved one
# slice at a time, starting one target later every round (as run.sh does).
rounds() {
  local kind=$1 cycle=0 n i count
  shift
  local targets=("$@")
  count=${#targets[@]}
  for t in "${targets[@]}"; do # warm-up: connections, caches, discovery
    IFS='|' read -r port host _ <<<"${T[$t]}"
    nsx taskset -c 0 wrk -t1 -c"$CONNS" -d1s -H "$host" "http://127.0.0.1:$port/" >/dev/null
  done
  for n in $(seq "$RUNS"); do
    for _ in $(seq "$SLICES"); do
      for i in $(seq 0 $((count - 1))); do slice "${targets[$(((i + cycle) % count))]}"; done
      cycle=$((cycle + 1))
    done
    for t in "${targets[@]}"; do run_record "$t" "$n" "$kind"; done
  done
}

if [ ${#ACTIVE[@]} -gt 0 ]; then
  log "mtls: keep-alive hop, $RUNS runs of ${DURATION}s per row in ${SLICE}s slices"
  rounds keepalive "${ACTIVE[@]}"
fi
if [ ${#HS[@]} -gt 0 ]; then
  log "mtls: a new connection at the hop for every request, $RUNS runs of ${DURATION}s per row"
  rounds newconn "${HS[@]}"
fi

# What spoke B saw: connections it terminated TLS on, or detected as plaintext HTTP.
if [ "$HAVE_SPOKE" = 1 ]; then
  detect=$(nsx curl -s "http://127.0.0.1:$B_ADMIN/metrics" | grep '^spoke_detect_total' || true)
  record "{\"kind\":\"mtls-detect\",\"target\":\"spoke-b\",\"lines\":$(python3 -c \
'import json,sys; print(json.dumps(sys.stdin.read().splitlines()))' <<<"$detect")}"
fi
for spec in "nginx-a $NA_PID" "nginx-b $NB_PID" ${SA_PID:+"spoke-a $SA_PID"} \
  ${SAN_PID:+"spoke-a-new $SAN_PID"} ${SB_PID:+"spoke-b $SB_PID"}; do
  read -r t pid <<<"$spec"
  record "{\"kind\":\"mtls-mem\",\"target\":\"$t\",\"hwm_kib\":$(awk '/^VmHWM:/{print $2}' \
"/proc/$pid/status"),\"rss_kib\":$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status")}"
done

if [ -z "$RAW_OUT" ]; then
  mkdir -p "$HERE/results"
  REPORT=$HERE/results/$(date -u +%Y-%m-%d-%H%M)-mtls.md
  python3 "$HERE/report_mtls.py" "$RAW" >"$REPORT"
  cat "$REPORT"
  log "report written to $REPORT"
fi
