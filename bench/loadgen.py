#!/usr/bin/env python3
"""Fixed-rate, open-loop HTTP/1.1 load generator for bench/run.sh (Python 3 stdlib only).

Why it exists: wrk measures latency closed-loop (a slow response delays the next request,
so stalls hide themselves: coordinated omission), and wrk2, which fixes that, is not packaged
in Debian. This generator sends request i at the *intended* time t0 + i/rate whatever
happened before, and measures each latency from that intended time. A request that has to
wait for a free connection, or that the generator itself sends late, is charged the wait: that
is the coordinated-omission correction. The latency from the actual send ("service time") is
recorded too, so the generator's own lateness can be told apart.

One thread, one `select()` loop over N keep-alive connections with at most one request in
flight each (no pipelining). `select()` takes a microsecond timeout (epoll's is in
milliseconds), and the timer slack is lowered to 1 µs, so requests leave close to their
intended time. Responses must carry Content-Length (a fixed nginx 200 and every proxy here
do); anything else is reported as an error.

Output: one JSON object on stdout (latencies in microseconds). Bench-only code: not part of
spoke's build; run.sh owns pinning it to a CPU.
"""

import argparse
import ctypes
import gc
import json
import select
import socket
import sys
import time
from array import array
from collections import deque

PR_SET_TIMERSLACK = 29


def lower_timer_slack():
    """Ask for 1 µs timer slack (default 50 µs) so select() wakes when asked; best effort."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted sequence (p in 0..100)."""
    if not sorted_values:
        return None
    rank = max(1, int(-(-p * len(sorted_values) // 100)))  # ceil(p/100 * n)
    return sorted_values[min(rank, len(sorted_values)) - 1]


class Conn:
    """One keep-alive connection and the request (if any) in flight on it."""

    __slots__ = ("sock", "buf", "intended", "sent", "need", "status")

    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.reset()

    def reset(self):
        self.buf = b""
        self.intended = None
        self.sent = None
        self.need = None  # total bytes of head + body once the head is parsed
        self.status = None

    def parse(self):
        """Returns True once a whole response is in `buf`; raises ValueError on bad framing."""
        if self.need is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    raise ValueError("response head over 64 KiB")
                return False
            head = self.buf[:end].decode("latin-1").split("\r\n")
            parts = head[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
                raise ValueError("bad status line %r" % head[0])
            self.status = int(parts[1])
            length = None
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "transfer-encoding":
                    raise ValueError("chunked responses are not supported by loadgen")
            if length is None:
                raise ValueError("response without Content-Length")
            self.need = end + 4 + length
        return len(self.buf) >= self.need


def run(args):
    lower_timer_slack()
    addr = (args.host, args.port)
    headers = "".join("%s\r\n" % h for h in args.header)
    if not any(h.lower().startswith("host:") for h in args.header):
        headers = "Host: %s:%d\r\n" % (args.host, args.port) + headers
    request = ("GET %s HTTP/1.1\r\n%s\r\n" % (args.path, headers)).encode("latin-1")

    conns = [Conn(addr) for _ in range(args.connections)]
    free = deque(conns)
    by_fd = {c.sock.fileno(): c for c in conns}
    busy = set()
    backlog = deque()  # intended send times waiting for a free connection

    lat = array("d")  # corrected latency (from intended send), seconds
    svc = array("d")  # service time (from actual send), seconds
    errors = {"status": 0, "framing": 0, "closed": 0, "unfinished": 0}
    interval = 1.0 / args.rate
    total = int(round(args.rate * (args.warmup + args.duration)))
    measure_from = args.warmup

    gc.disable()  # a collector pause would be charged to whichever request is in flight
    t0 = time.perf_counter() + 0.05
    i = 0
    deadline = t0 + args.warmup + args.duration + args.drain
    while True:
        now = time.perf_counter()
        # Every request whose time has come is due, whether or not a connection is free.
        while i < total and t0 + i * interval <= now:
            backlog.append(t0 + i * interval)
            i += 1
        while backlog and free:
            c = free.popleft()
            c.intended = backlog.popleft()
            c.sent = time.perf_counter()
            try:
                n = c.sock.send(request)
            except OSError:
                n = -1
            if n != len(request):
                # A fresh keep-alive socket takes a small request whole; anything else
                # means the connection is gone: replace it and retry this request.
                errors["closed"] += 1
                backlog.appendleft(c.intended)
                replace(c, addr, by_fd, free)
                continue
            busy.add(c.sock)
        if i >= total and not backlog and not busy:
            break
        if now > deadline:
            # Still waiting at the deadline: count them, and charge each at least its wait
            # so far (leaving them out would be coordinated omission again).
            waiting = [by_fd[s.fileno()].intended for s in busy] + list(backlog)
            errors["unfinished"] += len(waiting)
            lat.extend(now - t for t in waiting if t - t0 >= measure_from)
            break
        timeout = (t0 + i * interval - now) if i < total else (deadline - now)
        if backlog and not free:
            timeout = deadline - now
        timeout = max(0.0, timeout)
        if not busy:
            time.sleep(timeout)
            continue
        ready, _, _ = select.select(list(busy), [], [], timeout)
        for sock in ready:
            c = by_fd[sock.fileno()]
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            done_at = time.perf_counter()
            if not data:
                errors["closed"] += 1
                busy.discard(sock)
                backlog.appendleft(c.intended)
                replace(c, addr, by_fd, free)
                continue
            c.buf += data
            try:
                complete = c.parse()
            except ValueError as e:
                errors["framing"] += 1
                sys.stderr.write("loadgen: %s\n" % e)
                busy.discard(sock)
                replace(c, addr, by_fd, free)
                continue
            if not complete:
                continue
            if not 200 <= c.status < 300:
                errors["status"] += 1
            if c.intended - t0 >= measure_from:
                lat.append(done_at - c.intended)
                svc.append(done_at - c.sent)
            busy.discard(sock)
            c.reset()
            free.append(c)
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.sock.close()
    gc.enable()

    lat_us = sorted(x * 1e6 for x in lat)
    svc_us = sorted(x * 1e6 for x in svc)
    result = {
        "rate": args.rate,
        "connections": args.connections,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "measured": len(lat_us),
        "elapsed_s": round(elapsed, 3),
        "errors": errors,
        "p50_us": percentile(lat_us, 50),
        "p90_us": percentile(lat_us, 90),
        "p99_us": percentile(lat_us, 99),
        "p999_us": percentile(lat_us, 99.9),
        "max_us": lat_us[-1] if lat_us else None,
        "svc_p50_us": percentile(svc_us, 50),
        "svc_p99_us": percentile(svc_us, 99),
    }
    for k, v in list(result.items()):
        if isinstance(v, float):
            result[k] = round(v, 1)
    print(json.dumps(result))
    return 0 if sum(errors.values()) == 0 else 1


def replace(c, addr, by_fd, free):
    """Closes a broken connection and puts a fresh one in its place in the free list."""
    by_fd.pop(c.sock.fileno(), None)
    try:
        c.sock.close()
    except OSError:
        pass
    fresh = Conn(addr)
    by_fd[fresh.sock.fileno()] = fresh
    free.append(fresh)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/")
    p.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    p.add_argument("--rate", type=float, default=2000.0, help="requests per second")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds sent but not measured")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--drain", type=float, default=5.0, help="max wait for the last responses")
    args = p.parse_args()
    if args.rate <= 0 or args.duration <= 0 or args.connections <= 0:
        p.error("rate, duration and connections must be positive")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
