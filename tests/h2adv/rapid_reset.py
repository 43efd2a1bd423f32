"""Rapid reset (CVE-2023-44487): HEADERS then RST_STREAM, a thousand times in one write.
RFC 9113 leaves the limit to the server; spoke's answer is GOAWAY ENHANCE_YOUR_CALM, then a
clean close (the GOAWAY is read, not lost to a TCP reset). Usage: rapid_reset.py ADDR AUTHORITY"""
import sys

from h2adv import CANCEL, Conn, RstStreamFrame, expect_goaway, ok

addr, authority = sys.argv[1], sys.argv[2]
c = Conn(addr)
c.handshake()
frames = []
for i in range(1000):
    sid = 2 * i + 1
    frames.append(c.headers(sid, authority))
    frames.append(RstStreamFrame(sid, error_code=CANCEL))
try:
    c.send(*frames)
except OSError:
    pass  # the server may stop reading once it has said GOAWAY
g = expect_goaway(c, {"ENHANCE_YOUR_CALM"}, "rapid reset")
ok(f"GOAWAY ENHANCE_YOUR_CALM, last stream {g.last_stream_id}, then a clean close")
