"""The deadlines spoke keeps for HTTP/2 clients (h2 has no timers). Modes:
  silent     the preface, then nothing (no SETTINGS): the connection must close by itself
             (the handshake timeout), within 10 s here;
  idle       a full handshake, then no stream: GOAWAY NO_ERROR (the idle timeout), then a
             clean close;
  unanswered the handshake's PING answered, the keepalive PINGs after it not: at least
             one keepalive PING comes, then the connection closes;
  answered   every PING answered for 1.5 s: the connection stays open.
Usage: deadlines.py ADDR AUTHORITY MODE"""
import sys
import time

from h2adv import PREFACE, Conn, GoAwayFrame, PingFrame, code, expect_goaway, fail, ok

addr, mode = sys.argv[1], sys.argv[3]
c = Conn(addr, timeout=10)


def pong(f):
    ack = PingFrame(0, opaque_data=f.opaque_data)
    ack.flags.add("ACK")
    c.send(ack)


def is_ping(f):
    return isinstance(f, PingFrame) and "ACK" not in f.flags


if mode == "silent":
    c.sock.sendall(PREFACE)
    start = time.monotonic()
    deadline = start + 10
    try:
        while c.frame(deadline) is not None:
            pass
    except TimeoutError:
        fail("a client that sent no SETTINGS was still connected after 10 s")
    ok(f"no SETTINGS: closed after {time.monotonic() - start:.2f} s")
c.handshake()
if mode == "idle":
    start = time.monotonic()
    deadline = start + 10
    while True:
        f = c.frame(deadline)
        if f is None:
            fail("the idle connection ended without a GOAWAY")
        if is_ping(f):
            pong(f)
        if isinstance(f, GoAwayFrame):
            break
    expect_goaway(c, {"NO_ERROR"}, "idle connection", g=f)
    ok(f"idle: GOAWAY NO_ERROR after {time.monotonic() - start:.2f} s, then a clean close")
if mode in ("unanswered", "answered"):
    start = time.monotonic()
    deadline = start + (1.5 if mode == "answered" else 10)
    pings = 0
    try:
        while True:
            f = c.frame(deadline)
            if f is None:
                break
            if is_ping(f):
                pings += 1
                if mode == "answered":
                    pong(f)
    except TimeoutError:
        if mode == "unanswered":
            fail(f"still open after 10 s with PINGs unanswered ({pings} PINGs)")
        if pings < 3:
            fail(f"only {pings} PINGs in 1.5 s")
        ok(f"answered {pings} PINGs in 1.5 s and the connection stayed open")
    if mode == "answered":
        fail(f"the connection closed though every PING ({pings}) was answered")
    if pings < 1:
        fail("closed, but no keepalive PING came first")
    ok(f"keepalive PING unanswered: closed after {time.monotonic() - start:.2f} s")
fail(f"unknown mode {mode}")
