"""Premature resets: streams the server has accepted (a PING answered after their HEADERS
says so), then reset by the client, fifty at a time. Envoy's rule, which spoke follows: once
at least 100 were reset and they are at least half of the connection's streams, GOAWAY
ENHANCE_YOUR_CALM. Checks that it does not come before 100 resets, and that it comes (within
10 s: stream tasks see the resets after the PINGs are answered) once 200 were reset.
Usage: premature_reset.py ADDR AUTHORITY"""
import sys

from h2adv import CANCEL, Conn, GoAwayFrame, RstStreamFrame, expect_goaway, fail, ok

addr, authority = sys.argv[1], sys.argv[2]
c = Conn(addr)
c.handshake()
sid = 1
reset = 0
while True:
    batch = list(range(sid, sid + 100, 2))
    sid += 100
    try:
        c.send(*[c.headers(s, authority) for s in batch])
    except OSError:
        pass
    # Answered after the HEADERS were read, so the streams were accepted.
    r = c.ping()
    if r != "ack":
        if reset < 100:
            fail(f"the connection ended after {reset} resets, before 100 ({r})")
        if not isinstance(r, GoAwayFrame):
            fail(f"the connection ended after {reset} resets without a GOAWAY")
        break
    if reset >= 200:
        r = c.goaway(within=10)
        if r is None:
            fail(f"the connection ended without a GOAWAY after {reset} resets")
        break
    c.send(*[RstStreamFrame(s, error_code=CANCEL) for s in batch])
    reset += len(batch)
expect_goaway(c, {"ENHANCE_YOUR_CALM"}, f"after {reset} premature resets", g=r)
ok(f"GOAWAY ENHANCE_YOUR_CALM after {reset} accepted streams were reset, then a clean close")
