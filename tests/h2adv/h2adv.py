"""Hand-built HTTP/2 frames for the adversarial tests (tests/h2_adversarial.rs runs one
case script per test, each in its own process, against a proxy on loopback).

Frames come from hyperframe, header blocks from hpack, so a case can send what a
well-behaved client library never would. A case prints one line saying what it saw and
exits 0 when the proxy gave the answer RFC 9113 asks for, 1 (with the reason) otherwise.
"""

import select
import socket
import sys
import time

from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CODES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
}
CANCEL = 0x8


def code(c):
    return CODES.get(c, hex(c))


def fail(why):
    print("FAIL: " + why)
    sys.exit(1)


def ok(what):
    print("ok: " + what)
    sys.exit(0)


class Conn:
    """One client connection, read and written by hand."""

    def __init__(self, addr, timeout=5.0):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.at = 0
        self.enc = Encoder()
        self.dec = Decoder()
        self.eof = False
        self.reset = False

    def send(self, *frames):
        self.sock.sendall(b"".join(f.serialize() for f in frames))

    def handshake(self):
        """Preface and SETTINGS both ways, each acknowledged (and the server's
        first PING answered, which proves the client's SETTINGS came): from then on
        the server's limits (header list size, ...) are in force."""
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize())
        got_settings = got_ack = got_ping = False
        deadline = time.monotonic() + 5
        while not (got_settings and got_ack and got_ping):
            f = self.frame(deadline)
            if f is None:
                fail("connection closed during the handshake")
            if isinstance(f, PingFrame) and "ACK" not in f.flags:
                got_ping = True
                self.pong(f)
            if isinstance(f, SettingsFrame):
                if "ACK" in f.flags:
                    got_ack = True
                else:
                    got_settings = True
                    ack = SettingsFrame(0)
                    ack.flags.add("ACK")
                    self.send(ack)

    def pong(self, ping):
        ack = PingFrame(0, opaque_data=ping.opaque_data)
        ack.flags.add("ACK")
        self.send(ack)

    def block(self, authority, extra=()):
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            # A client-streaming method: the backend holds the stream open
            # until the request ends, which these clients never do.
            (":path", "/test.Echo/Sum"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        return self.enc.encode(headers + list(extra))

    def headers(self, sid, authority, end_stream=False, end_headers=True, extra=()):
        f = HeadersFrame(sid)
        f.data = self.block(authority, extra)
        if end_headers:
            f.flags.add("END_HEADERS")
        if end_stream:
            f.flags.add("END_STREAM")
        return f

    def frame(self, deadline):
        """The next frame, or None at EOF (or a TCP reset, recorded)."""
        while True:
            at, buf = self.at, self.buf
            if len(buf) - at >= 9:
                f, length = Frame.parse_frame_header(memoryview(buf)[at : at + 9])
                if len(buf) - at >= 9 + length:
                    f.parse_body(memoryview(buf)[at + 9 : at + 9 + length])
                    self.at = at + 9 + length
                    return f
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame in time")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                self.reset = True
                data = b""
            if not data:
                self.eof = True
                return None
            self.buf = self.buf[self.at :] + data
            self.at = 0

    def goaway(self, within=5.0):
        """Reads until a GOAWAY (returned) or the end of the connection (None)."""
        deadline = time.monotonic() + within
        while True:
            f = self.frame(deadline)
            if f is None or isinstance(f, GoAwayFrame):
                return f

    def closes_cleanly(self, within=5.0):
        """After a GOAWAY: reads to EOF (answering PINGs, as a graceful shutdown
        needs); False when it ended in a TCP reset."""
        deadline = time.monotonic() + within
        while True:
            f = self.frame(deadline)
            if f is None:
                return not self.reset
            if isinstance(f, PingFrame) and "ACK" not in f.flags:
                try:
                    self.pong(f)
                except OSError:
                    pass

    def ping(self, within=5.0):
        """Sends a PING and reads until its ACK ("ack"), a GOAWAY (returned) or the
        end of the connection (None)."""
        try:
            self.send(PingFrame(0, opaque_data=b"spoke!!!"))
        except OSError:
            pass
        deadline = time.monotonic() + within
        while True:
            f = self.frame(deadline)
            if f is None or isinstance(f, GoAwayFrame):
                return f
            if isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == b"spoke!!!":
                return "ack"

    def ping_skimming(self, unsent=b"", within=20.0):
        """`ping` for a connection with a flood of frames queued both ways: `unsent`
        (the rest of the last frame) then the PING go out as the socket takes them,
        while frame headers are read by hand, without building frames, until the ACK
        ("ack"), a GOAWAY (its error code name) or the end (None). Returns also the
        frames skimmed."""
        out = bytes(unsent) + PingFrame(0, opaque_data=b"spoke!!!").serialize()
        self.sock.setblocking(False)
        deadline = time.monotonic() + within
        skimmed = 0
        buf, at = self.buf[self.at :], 0
        while True:
            while len(buf) - at >= 9:
                length = int.from_bytes(buf[at : at + 3], "big")
                kind, flags = buf[at + 3], buf[at + 4]
                if len(buf) - at < 9 + length:
                    break
                body = buf[at + 9 : at + 9 + length]
                at += 9 + length
                skimmed += 1
                if kind == 0x6 and flags & 0x1 and body == b"spoke!!!":
                    return "ack", skimmed
                if kind == 0x7:
                    return code(int.from_bytes(body[4:8], "big")), skimmed
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no PING ACK in time ({skimmed} frames read)")
            readable, writable, _ = select.select([self.sock], [self.sock] if out else [], [], left)
            if writable:
                try:
                    out = out[self.sock.send(out) :]
                except BlockingIOError:
                    pass
                except OSError:
                    out = b""
            if not readable:
                continue
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                return None, skimmed
            buf, at = buf[at:] + data, 0

    def ping_answered(self, within=5.0):
        return self.ping(within) == "ack"


def expect_goaway(c, want, what, g=None):
    """The GOAWAY (`g`, when already read) has one of the codes in `want`, and the
    connection then closes without a TCP reset."""
    g = g or c.goaway()
    if g is None:
        fail(f"{what}: the connection ended without a GOAWAY (reset: {c.reset})")
    if code(g.error_code) not in want:
        fail(f"{what}: GOAWAY {code(g.error_code)}, expected one of {want}")
    if not c.closes_cleanly():
        fail(f"{what}: GOAWAY {code(g.error_code)}, then a TCP reset instead of a clean close")
    return g


__all__ = [
    "CANCEL",
    "Conn",
    "ContinuationFrame",
    "GoAwayFrame",
    "HeadersFrame",
    "PingFrame",
    "RstStreamFrame",
    "SettingsFrame",
    "WindowUpdateFrame",
    "code",
    "expect_goaway",
    "fail",
    "ok",
]
