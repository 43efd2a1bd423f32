"""Flow-control window overflow: WINDOW_UPDATE on the connection by 2^31-1, on top of the
initial 65,535. RFC 9113 section 6.9.1: a window above 2^31-1 is a connection error of type
FLOW_CONTROL_ERROR (GOAWAY). Usage: window_overflow.py ADDR AUTHORITY"""
import sys

from h2adv import Conn, WindowUpdateFrame, expect_goaway, ok

addr = sys.argv[1]
c = Conn(addr)
c.handshake()
c.send(WindowUpdateFrame(0, window_increment=2**31 - 1))
expect_goaway(c, {"FLOW_CONTROL_ERROR"}, "connection window overflow")
ok("GOAWAY FLOW_CONTROL_ERROR, then a clean close")
