"""An oversized header list: one 3,000-byte header added to the HPACK table, then
referenced again 29 times (a 3 KiB block that decodes to 90 KB, over spoke's 64 KiB
SETTINGS_MAX_HEADER_LIST_SIZE). RFC 9113 sections 8.2.2 and 10.5.1: the server may answer
431 and must keep the connection's HPACK state, so it is a stream error: the stream gets
431 (and/or RST_STREAM) and the connection still answers a PING.
Usage: oversized_headers.py ADDR AUTHORITY"""
import sys
import time

from h2adv import Conn, GoAwayFrame, HeadersFrame, RstStreamFrame, code, fail, ok

addr, authority = sys.argv[1], sys.argv[2]
c = Conn(addr)
c.handshake()
big = [("x-big", "v" * 3000)] * 30
c.send(c.headers(1, authority, end_stream=True, extra=big))
deadline = time.monotonic() + 5
answer = None
while answer is None:
    f = c.frame(deadline)
    if f is None:
        fail("the connection ended instead of a stream error")
    if isinstance(f, GoAwayFrame):
        fail(f"GOAWAY {code(f.error_code)}: a connection error for a stream's headers")
    if isinstance(f, HeadersFrame) and f.stream_id == 1:
        status = dict(c.dec.decode(f.data)).get(":status")
        answer = f"HEADERS {status}"
    if isinstance(f, RstStreamFrame) and f.stream_id == 1:
        answer = f"RST_STREAM {code(f.error_code)}"
if not c.ping_answered():
    fail(f"{answer}, but then the connection did not answer a PING")
ok(f"stream 1 refused with {answer}; the connection still answers")
