"""SETTINGS or PING flood (CVE-2019-9515, CVE-2019-9512): frames that each ask for an ACK,
sent while the client reads nothing, so ACKs could pile up in the server. RFC 9113 asks for
an ACK to each; what bounds the server is backpressure: it must stop reading (or say GOAWAY
ENHANCE_YOUR_CALM) rather than queue ACKs without limit. Phase 1 writes without reading for
5 s at most, until the socket stops taking bytes for half a second (without backpressure
the server would take the 64 MiB cap); phase 2 reads again: the connection must then
answer a PING, or have said GOAWAY ENHANCE_YOUR_CALM. Prints the bytes the server took.
Usage: flood.py ADDR AUTHORITY settings|ping"""
import sys
import time

from h2adv import Conn, PingFrame, SettingsFrame, fail, ok

addr, kind = sys.argv[1], sys.argv[3]
c = Conn(addr)
c.handshake()
if kind == "settings":
    one = SettingsFrame(0).serialize()
elif kind == "ping":
    one = PingFrame(0, opaque_data=b"flooding").serialize()
else:
    fail(f"unknown flood {kind}")
chunk = one * 4096
cap = 64 << 20
sent = 0
c.sock.setblocking(False)
stalled_since = None
pending = memoryview(chunk)
started = time.monotonic()
while sent < cap and time.monotonic() - started < 5:
    try:
        n = c.sock.send(pending)
        sent += n
        # `pending` always ends at a frame boundary.
        pending = pending[n:] if n < len(pending) else memoryview(chunk)
        stalled_since = None
    except BlockingIOError:
        now = time.monotonic()
        stalled_since = stalled_since or now
        if now - stalled_since > 0.5:
            break
        time.sleep(0.01)
    except OSError as e:
        fail(f"the connection failed while flooding after {sent} bytes: {e}")
took = time.monotonic() - started
print(f"phase 1: {sent} bytes in {took:.1f} s", file=sys.stderr, flush=True)
frames = sent // len(one)
if sent >= cap:
    fail(f"the server took {sent} bytes ({frames} {kind} frames) without their ACKs being read")
# Phase 2: read the ACKs; the connection must still work, or have said why not.
r, skimmed = c.ping_skimming(unsent=pending, within=40)
print(f"phase 2: {time.monotonic() - started - took:.1f} s", file=sys.stderr, flush=True)
what = f"took {sent} bytes ({frames} {kind} frames) in {took:.1f} s unread"
if r == "ack":
    ok(f"{what}, then sent {skimmed} frames and answered a PING")
if r == "ENHANCE_YOUR_CALM":
    ok(f"{what}, then GOAWAY ENHANCE_YOUR_CALM")
fail(f"{what}; then {r} after {skimmed} frames")
