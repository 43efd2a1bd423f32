"""CONTINUATION flood (CVE-2024-27316 and kin): one HEADERS without END_HEADERS, then empty
CONTINUATION frames without end. A header block must stay bounded: RFC 9113 section 10.5
lets the server treat it as a connection error; spoke (h2) says GOAWAY ENHANCE_YOUR_CALM
after a bounded number of frames, and closes cleanly.
Usage: continuation_flood.py ADDR AUTHORITY"""
import sys

from h2adv import Conn, ContinuationFrame, expect_goaway, ok

addr, authority = sys.argv[1], sys.argv[2]
c = Conn(addr)
c.handshake()
frames = [c.headers(1, authority, end_headers=False)]
frames += [ContinuationFrame(1) for _ in range(20000)]
try:
    c.send(*frames)
except OSError:
    pass
g = expect_goaway(c, {"ENHANCE_YOUR_CALM", "COMPRESSION_ERROR", "PROTOCOL_ERROR"}, "CONTINUATION flood")
ok(f"connection error after the CONTINUATION flood: GOAWAY code {g.error_code}, then a clean close")
