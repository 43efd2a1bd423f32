#!/usr/bin/env bash
# Installs the system packages spoke's build needs on Debian/Ubuntu:
# grpcio's bundled C core wants cmake and a C++ compiler. spoke builds grpcio without TLS,
# which needs no OpenSSL; libssl-dev is installed too so that a build with grpcio's `openssl`
# feature (the combination DESIGN.md lists as known to work) needs nothing more.
# The `aws-lc-rs` crypto provider (a cargo feature, see Cargo.toml) needs nothing more
# either: on x86_64/aarch64 Linux aws-lc-sys builds AWS-LC with the C compiler and its
# pregenerated bindings (no Go, no libclang), and falls back to the cmake above elsewhere.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
# The soak test (tests/soak.rs) drives the proxy with bench/soak.py; the
# network-namespace test (tests/netns.rs) needs ip, iptables and python3.
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
# The HTTP/2 tests drive the proxy with nghttp (a real HTTP/2 client that
# sets any header, such as Linkerd's l5d-orig-proto).
command -v nghttp >/dev/null 2>&1 || need+=(nghttp2-client)
# The HTTP/2 adversarial tests (tests/h2_adversarial.rs) build frames by hand
# with Debian's python3-h2 (hyperframe, hpack), run by /usr/bin/python3.
/usr/bin/python3 -c 'import h2, hyperframe, hpack' >/dev/null 2>&1 || need+=(python3-h2)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
# One shared target directory outside the clone, so tests and runs reuse one
# build of grpcio's C core. Callers may override CARGO_TARGET_DIR.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/spoke-target}"
mkdir -p "$CARGO_TARGET_DIR"
