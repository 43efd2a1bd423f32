#!/usr/bin/env python3
"""Idle HTTP/2 connections for bench/h2.sh's memory rows (Python 3 stdlib only).

Opens N h2c (prior knowledge) connections to one address and brings each to the state the
memory row asks for, then holds them open, idle, until it is killed (or --hold passes):

  settings  the client preface and an empty SETTINGS frame sent, the server's SETTINGS
            received and acknowledged (a connection that has done nothing yet);
  request   the same, then one `GET` on stream 1 whose response came back whole
            (END_STREAM seen): a connection that has been used once and is now idle.

When every connection is in that state (or --setup seconds passed) it writes one JSON object
to --ready FILE (renamed into place, so a reader never sees half of it) and on stdout:
opened, ready, answered with a 200, errors. While holding it keeps answering the server's
PINGs and SETTINGS and counts connections the server closes (printed at exit).

The frame layer is the minimum a client needs: 9-byte frame headers, SETTINGS/PING
acknowledgements, and a request header block of HPACK literals without Huffman coding.
Whether a response was a 200 is read from its header block's first byte (0x88, the indexed
`:status: 200` every server here sends); anything else counts as "not 200". h2.sh owns
starting it (pinned to CPU 0), reading the proxy's memory and stopping it by PID.
`h2idle.py selftest` checks the encoder and the frame parser.
"""

import argparse
import json
import os
import selectors
import socket
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING, GOAWAY, CONTINUATION = 0x0, 0x1, 0x4, 0x6, 0x7, 0x9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20


# ---------------------------------------------------------------- pure frame layer


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream & 0x7FFFFFFF) + payload


def parse_frames(buf):
    """Splits whole frames off the front of buf: ([(type, flags, stream, payload)], rest)."""
    out = []
    while len(buf) >= 9:
        length = int.from_bytes(buf[0:3], "big")
        if len(buf) < 9 + length:
            break
        ftype, flags = buf[3], buf[4]
        stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        out.append((ftype, flags, stream, bytes(buf[9:9 + length])))
        buf = buf[9 + length:]
    return out, buf


def hpack_int(value, prefix_bits, first):
    """HPACK integer (RFC 7541 5.1) with `first`'s high bits kept."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(s):
    raw = s.encode()
    return hpack_int(len(raw), 7, 0x00) + raw  # no Huffman


def request_block(authority, path):
    """:method GET (static 2), :scheme http (static 6), :path and :authority as literals
    without indexing on their static names (4 and 1)."""
    return (bytes([0x82, 0x86]) + hpack_int(4, 4, 0x00) + hpack_string(path)
            + hpack_int(1, 4, 0x00) + hpack_string(authority))


def header_block_start(flags, payload):
    """The header block fragment of a HEADERS frame (padding and priority removed)."""
    start, end = 0, len(payload)
    if flags & PADDED:
        end -= payload[0]
        start = 1
    if flags & PRIORITY:
        start += 5
    return payload[start:end]


# ---------------------------------------------------------------- connections


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.out = b""
        self.got_settings = False
        self.answered = False
        self.status_200 = False
        self.closed = False


def run(args):
    host, _, port = args.addr.rpartition(":")
    sel = selectors.DefaultSelector()
    conns, errors = [], 0
    hello = PREFACE + frame(SETTINGS, 0, 0)
    get = frame(HEADERS, END_STREAM | END_HEADERS, 1, request_block(args.authority, args.path))
    for _ in range(args.conns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            s.connect((host, int(port)))
        except OSError:
            errors += 1
            s.close()
            continue
        s.setblocking(False)
        c = Conn(s)
        c.out = hello + (get if args.mode == "request" else b"")
        conns.append(c)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    def ready(c):
        return c.got_settings and (args.mode == "settings" or c.answered)

    def pump(c, events):
        if events & selectors.EVENT_WRITE and c.out:
            try:
                n = c.sock.send(c.out)
                c.out = c.out[n:]
            except BlockingIOError:
                pass
        if events & selectors.EVENT_READ:
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data == b"":
                c.closed = True
                sel.unregister(c.sock)
                return
            if data:
                frames, c.buf = parse_frames(c.buf + data)
                for ftype, flags, stream, payload in frames:
                    if ftype == SETTINGS and not flags & ACK:
                        c.got_settings = True
                        c.out += frame(SETTINGS, ACK, 0)
                    elif ftype == PING and not flags & ACK:
                        c.out += frame(PING, ACK, 0, payload)
                    elif ftype == HEADERS and stream == 1:
                        block = header_block_start(flags, payload)
                        if not c.answered and block[:1] == b"\x88":
                            c.status_200 = True
                        c.answered = c.answered or bool(flags & END_STREAM)
                    elif ftype == DATA and stream == 1 and flags & END_STREAM:
                        c.answered = True
                    elif ftype == GOAWAY:
                        c.closed = True
        sel.modify(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0), c)

    deadline = time.monotonic() + args.setup
    while time.monotonic() < deadline and not all(ready(c) or c.closed for c in conns):
        for key, events in sel.select(timeout=0.1):
            pump(key.data, events)
    result = {
        "mode": args.mode,
        "conns": args.conns,
        "opened": len(conns),
        "ready": sum(1 for c in conns if ready(c) and not c.closed),
        "answered_200": sum(1 for c in conns if c.status_200 and c.answered),
        "closed_by_peer": sum(1 for c in conns if c.closed),
        "connect_errors": errors,
    }
    text = json.dumps(result)
    if args.ready:
        tmp = args.ready + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, args.ready)
    print(text, flush=True)
    end = time.monotonic() + args.hold
    while time.monotonic() < end:
        for key, events in sel.select(timeout=0.5):
            if not key.data.closed:
                pump(key.data, events)
    print(json.dumps({"closed_while_holding": sum(1 for c in conns if c.closed)}), flush=True)
    return 0


# ---------------------------------------------------------------- selftest


def selftest():
    f = frame(SETTINGS, ACK, 0) + frame(HEADERS, END_HEADERS, 1, b"\x88")
    frames, rest = parse_frames(f + b"\x00\x00")
    assert frames == [(SETTINGS, ACK, 0, b""), (HEADERS, END_HEADERS, 1, b"\x88")], frames
    assert rest == b"\x00\x00", rest
    assert hpack_int(10, 5, 0) == b"\x0a"
    assert hpack_int(1337, 5, 0) == b"\x1f\x9a\x0a"  # RFC 7541 C.1.2
    block = request_block("a:1", "/p")
    assert block == b"\x82\x86\x04\x02/p\x01\x03a:1", block
    padded = bytes([2]) + b"\x88" + b"\x00\x00"
    assert header_block_start(PADDED, padded) == b"\x88"
    assert header_block_start(PRIORITY, b"\x00" * 5 + b"\x88") == b"\x88"
    print("h2idle selftest: ok")
    return 0


def main():
    if sys.argv[1:2] == ["selftest"]:
        return selftest()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--addr", required=True, help="HOST:PORT to connect to")
    p.add_argument("--authority", required=True)
    p.add_argument("--path", default="/r/x")
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--mode", choices=["settings", "request"], default="request")
    p.add_argument("--setup", type=float, default=30.0, help="seconds to get them ready")
    p.add_argument("--hold", type=float, default=60.0, help="seconds to hold them at most")
    p.add_argument("--ready", help="file to write the ready JSON to")
    return run(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
