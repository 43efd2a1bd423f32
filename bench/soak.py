#!/usr/bin/env python3
"""Soak run for spoke (Python 3 stdlib only): steady load while everything around the proxy
churns, sampling the proxy's memory, fds and threads. bench/soak.sh is the entry point;
README.md beside this file describes the scenario and the pass criteria.

Subcommands:
  run      the soak: starts backends, `spoke controller` and spoke, drives load and churn for
           --duration seconds, prints samples and a summary, exits 1 if a goal fails.
  backend  one HTTP/1.1 keep-alive backend answering 200 "ok" (run by `run` as its own
           process, so it can be killed and restarted).
  selftest checks the verdict's pure parts (trend, failure classes); tests/soak.rs runs it.

Everything listens on 127.0.0.1. Every process `run` starts is recorded by PID and killed on
the way out, whatever the exit path. Bench-only code: not part of spoke's build.
"""

import argparse
import http.client
import http.server
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # leave no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spoke_cases import DOMAIN, PORT, write_atomically  # noqa: E402  (bench's shared helpers)

BOOKS = "books.%s" % DOMAIN
ROTATING = 10  # rot0 … rot9: each used for 1 s in every 10 s, so evicted and re-created
BACKENDS = 4
# What a failure says when the proxy lost the upstream connection after sending the request.
LOST_AFTER_SEND = ("connection reset before response", "connection closed before response")
UNAVOIDABLE = "unavoidable: POST in flight on a backend killed with SIGKILL (not safe to repeat)"
# A response whose head spoke had already passed on when its backend was killed: nothing can
# resend a response that has begun (the backend writes its head and body apart, so a kill can
# fall between them).
UNAVOIDABLE_CUT = ("unavoidable: response cut mid-body by a backend SIGKILL "
                   "(its head was already on its way to the client)")


def log(msg):
    sys.stderr.write("[soak %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


# ---------------------------------------------------------------- backend


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = answer
    do_POST = answer

    def log_message(self, *args):
        pass


def cmd_backend(args):
    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

    srv = Server(("127.0.0.1", args.port), Handler)

    def stop(*_):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    srv.serve_forever()


# ---------------------------------------------------------------- the mesh file


def profile_doc(name, version):
    """A profile that changes on every version: route names, regexes and order move. Names
    come from a bounded set (8 x 7 x 5 combinations), as a real service's do: every distinct
    route name is a metrics series the proxy keeps."""
    routes = [
        ("soak-%d" % (version % 8), "/soak/[^/]+"),
        ("post-%d" % (version % 7), "/post/[^/]+" if version % 2 else "/post/.*"),
        ("other-%d" % (version % 5), "/other/%d" % (version % 5)),
    ]
    if version % 3 == 0:
        routes.reverse()
    out = [
        "---\napiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\n"
        "metadata:\n  name: %s\n  namespace: default\nspec:\n  routes:\n" % name
    ]
    for rname, regex in routes:
        method = "POST" if rname.startswith("post") else "GET"
        out.append(
            "  - name: %s\n    condition:\n      method: %s\n      pathRegex: %s\n"
            % (json.dumps(rname), method, json.dumps(regex))
        )
    return "".join(out)


def endpoints_doc(name, addrs):
    lines = "".join("    - %s\n" % a for a in addrs)
    return (
        "---\napiVersion: spoke.dev/v1alpha1\nkind: Endpoints\n"
        "metadata:\n  name: %s\nspec:\n  ports:\n  - port: %d\n    addresses:\n%s"
        % (name, PORT, lines)
    )


# ---------------------------------------------------------------- processes


class Procs:
    """Every process the soak starts, by PID; all killed by `kill_all`."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.live = {}  # name -> Popen
        self.lock = threading.Lock()

    def start(self, name, argv, env=None):
        out = open(os.path.join(self.logdir, name + ".log"), "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                             stdin=subprocess.DEVNULL)
        out.close()
        with self.lock:
            self.live[name] = p
        return p

    def get(self, name):
        with self.lock:
            return self.live.get(name)

    def signal(self, name, sig, wait=5.0):
        """Sends `sig`; waits up to `wait` s for the exit (then SIGKILL). Returns the exit
        code, or None if it had to be killed."""
        p = self.get(name)
        if p is None:
            return None
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            rc = p.wait(wait)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = None
        with self.lock:
            if self.live.get(name) is p:
                del self.live[name]
        return rc

    def kill_all(self):
        with self.lock:
            procs = list(self.live.values())
            self.live.clear()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def free_port_base(span=14, tries=200):
    """A base such that base+1 … base+span are all free on 127.0.0.1 right now (several
    soaks, or a soak and bench/run.sh, may share the machine)."""
    for _ in range(tries):
        base = random.randrange(20000, 30000 - span)
        socks = []
        try:
            for port in range(base + 1, base + span + 1):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise SystemExit("no %d free consecutive ports found" % span)


def http_get(port, path, host="localhost", timeout=2.0):
    """One GET on a fresh connection: (status, body, l5d-proxy-error or None)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read(), r.getheader("l5d-proxy-error")
    finally:
        c.close()


# ---------------------------------------------------------------- the run


class Soak:
    def __init__(self, args):
        self.a = args
        base = args.port_base
        self.backend_ports = [base + 1 + i for i in range(BACKENDS)]
        self.ctl_port = base + 10
        self.proxy_port = base + 11
        self.admin_port = base + 12
        self.inbound_port = base + 13
        self.dir = args.dir
        self.mesh = os.path.join(self.dir, "mesh.yaml")
        self.procs = Procs(self.dir)
        self.stop = threading.Event()
        self.lock = threading.Lock()  # guards everything below
        self.version = 0
        self.excluded = set()  # backend indexes drained out of every endpoint set
        self.rotation = 0  # which backend books leaves out this round
        self.crashes = []  # (t_before, t_after) of each SIGKILL of a backend
        self.events = {"profile writes": 0, "endpoint changes": 0, "controller SIGKILL": 0,
                       "controller SIGTERM": 0, "backend drained restarts": 0,
                       "backend SIGKILL restarts": 0, "slow requests": 0,
                       "rotating-name requests": 0}
        self.problems = []  # things that went wrong in the scenario itself
        self.ok = 0  # successful requests since the last sample
        self.ok_total = 0
        self.failures = []  # dicts

    # --- the file

    def endpoint_sets(self):
        live = [i for i in range(BACKENDS) if i not in self.excluded]
        books = [i for i in live if i != self.rotation % BACKENDS] or live
        addr = lambda i: "127.0.0.1:%d" % self.backend_ports[i]  # noqa: E731
        return [addr(i) for i in books], [addr(i) for i in live]

    def write_mesh(self):
        with self.lock:
            self.version += 1
            v = self.version
            books, every = self.endpoint_sets()
        docs = [profile_doc(BOOKS, v), endpoints_doc(BOOKS, books)]
        for k in range(ROTATING):
            name = "rot%d.%s" % (k, DOMAIN)
            docs.append(profile_doc(name, v))
            docs.append(endpoints_doc(name, every))
        write_atomically(self.mesh, "".join(docs))

    # --- processes

    def start_backend(self, i):
        name = "backend%d" % i
        self.procs.start(name, [sys.executable, os.path.abspath(__file__), "backend",
                                "--port", str(self.backend_ports[i])])
        if not wait_port(self.backend_ports[i], time.monotonic() + 10):
            self.problems.append("%s did not listen within 10 s" % name)

    def start_controller(self):
        argv = [self.a.spoke, "controller", "--config", self.mesh,
                "--listen", "127.0.0.1:%d" % self.ctl_port]
        # The CA certificate the controller generates goes into the run's own directory: a
        # controller killed with SIGKILL cannot remove its default file in $TMPDIR.
        env = dict(os.environ, RUST_LOG="warn",
                   SPOKE_CONTROLLER_IDENTITY_TRUST_ANCHORS_OUT=os.path.join(self.dir, "anchors.pem"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            p = self.procs.start("controller", argv, env)
            if wait_port(self.ctl_port, min(deadline, time.monotonic() + 3)) and p.poll() is None:
                return
            # The port may still be held for a moment after a SIGKILL: try again.
            self.procs.signal("controller", signal.SIGKILL)
            time.sleep(0.1)
        self.problems.append("the controller did not restart within 10 s")

    def start_proxy(self):
        env = dict(os.environ)
        env.update({
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR": "127.0.0.1:%d" % self.ctl_port,
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR": "127.0.0.1:%d" % self.proxy_port,
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "127.0.0.1:%d" % self.admin_port,
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "127.0.0.1:%d" % self.inbound_port,
            "LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT": self.a.idle_timeout,
            "LINKERD2_PROXY_LOG": "warn",
        })
        return self.procs.start("spoke", [self.a.spoke], env)

    # --- load

    def record(self, kind, method, host, started, ended, status=None, reason=None, error=None):
        if status is not None and 200 <= status < 300:
            with self.lock:
                self.ok += 1
                self.ok_total += 1
            return
        f = {"t": round(ended - self.t0, 3), "kind": kind, "method": method, "host": host,
             "started": started, "ended": ended, "status": status,
             "l5d-proxy-error": reason, "error": error}
        with self.lock:
            self.failures.append(f)
        log("FAILED %s %s %s at t=%.3f: %s" % (kind, method, host, f["t"],
                                               error or "%s %s" % (status, reason)))

    def steady(self, n, rate):
        """One keep-alive connection sending to books at `rate` req/s; every 10th is a POST."""
        conn = None
        i = 0
        next_at = time.monotonic()
        host = "%s:%d" % (BOOKS, PORT)
        while not self.stop.is_set():
            next_at += 1.0 / rate
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            elif delay < -1:
                next_at = time.monotonic()  # fell behind (a slow spell): do not burst
            i += 1
            post = i % 10 == 0
            method, path = ("POST", "/post/%d-%d" % (n, i)) if post else ("GET", "/soak/%d" % i)
            started = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.proxy_port, timeout=10)
                if post:
                    conn.request(method, path, body=b"x" * 64, headers={"Host": host})
                else:
                    conn.request(method, path, headers={"Host": host})
                r = conn.getresponse()
                r.read()
                self.record("steady", method, host, started, time.monotonic(), r.status,
                            r.getheader("l5d-proxy-error"))
                if r.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                self.record("steady", method, host, started, time.monotonic(),
                            error="%s: %s" % (type(e).__name__, e))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def rotating(self):
        """10 req/s to rot{k}, k moving on every second: each name is new, then idle past
        the discovery idle timeout (evicted), then new again."""
        while not self.stop.is_set():
            k = int(time.monotonic() - self.t0) % ROTATING
            host = "rot%d.%s:%d" % (k, DOMAIN, PORT)
            started = time.monotonic()
            try:
                status, _, reason = http_get(self.proxy_port, "/soak/r", host, timeout=10)
                self.record("rotating", "GET", host, started, time.monotonic(), status, reason)
                with self.lock:
                    self.events["rotating-name requests"] += 1
            except (OSError, http.client.HTTPException) as e:
                self.record("rotating", "GET", host, started, time.monotonic(),
                            error="%s: %s" % (type(e).__name__, e))
            self.stop.wait(0.1)

    def slow(self, n):
        """A client trickling its request head one byte every 30 ms (about 3 s a request)."""
        host = "%s:%d" % (BOOKS, PORT)
        req = ("GET /soak/slow-%d HTTP/1.1\r\nHost: %s\r\nUser-Agent: trickle\r\n"
               "Connection: close\r\n\r\n" % (n, host)).encode()
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                s = socket.create_connection(("127.0.0.1", self.proxy_port), timeout=10)
                try:
                    for b in req:
                        s.sendall(bytes([b]))
                        if self.stop.wait(0.03):
                            break
                    else:
                        data = b""
                        while True:
                            chunk = s.recv(4096)
                            if not chunk:
                                break
                            data += chunk
                        m = re.match(rb"HTTP/1\.1 (\d{3})", data)
                        reason = re.search(rb"\r\nl5d-proxy-error: ([^\r]*)", data)
                        self.record("slow", "GET", host, started, time.monotonic(),
                                    int(m.group(1)) if m else 0,
                                    reason.group(1).decode() if reason else None,
                                    None if m else "no status line in %r" % data[:80])
                        with self.lock:
                            self.events["slow requests"] += 1
                finally:
                    s.close()
            except OSError as e:
                self.record("slow", "GET", host, started, time.monotonic(),
                            error="%s: %s" % (type(e).__name__, e))

    # --- churn

    def profiles(self):
        """Rewrites the file every 100 ms (a new profile version each time)."""
        while not self.stop.wait(0.1):
            self.write_mesh()
            with self.lock:
                self.events["profile writes"] += 1

    def endpoints(self):
        """Every 2 s, books leaves out the next backend (one removed, one added back)."""
        while not self.stop.wait(2.0):
            with self.lock:
                self.rotation += 1
                self.events["endpoint changes"] += 1

    def schedule(self):
        """Restarts on a 30 s cycle, offset so they never overlap: a drained backend restart
        at 5 s, the controller at 15 s (SIGKILL and SIGTERM in turn), a backend SIGKILL at
        25 s."""
        t = 0
        round_ = 0
        while not self.stop.wait(max(0.0, self.t0 + t + 1 - time.monotonic())):
            t += 1
            phase = t % 30
            if phase == 5:
                self.drained_restart(round_ % BACKENDS)
            elif phase == 15:
                self.restart_controller(signal.SIGKILL if round_ % 2 == 0 else signal.SIGTERM)
            elif phase == 25:
                self.crash_restart((round_ + 2) % BACKENDS)
                round_ += 1

    def drained_restart(self, i):
        with self.lock:
            self.excluded.add(i)
        # The file poll (250 ms), the stream push and the swap: 2 s is plenty.
        if self.stop.wait(2.0):
            return
        self.procs.signal("backend%d" % i, signal.SIGTERM)
        self.start_backend(i)
        with self.lock:
            self.excluded.discard(i)
            self.events["backend drained restarts"] += 1

    def crash_restart(self, i):
        with self.lock:
            books, _ = self.endpoint_sets()
        if "127.0.0.1:%d" % self.backend_ports[i] not in books:
            i = next(j for j in range(BACKENDS) if "127.0.0.1:%d" % self.backend_ports[j] in books)
        p = self.procs.get("backend%d" % i)
        before = time.monotonic()
        self.procs.signal("backend%d" % i, signal.SIGKILL)
        after = time.monotonic()
        with self.lock:
            self.crashes.append((before, after))
            self.events["backend SIGKILL restarts"] += 1
        log("backend%d (pid %s) killed with SIGKILL" % (i, p.pid if p else "?"))
        self.stop.wait(0.5)
        self.start_backend(i)

    def restart_controller(self, sig):
        name = "SIGKILL" if sig == signal.SIGKILL else "SIGTERM"
        rc = self.procs.signal("controller", sig, wait=8.0)
        if sig == signal.SIGTERM and rc != 0:
            self.problems.append("the controller did not exit 0 on SIGTERM (%r)" % rc)
        self.start_controller()
        with self.lock:
            self.events["controller %s" % name] += 1
        log("controller restarted after %s" % name)

    # --- sampling

    def sample(self, pid, last):
        now = time.monotonic()
        status = open("/proc/%d/status" % pid).read()
        field = lambda k: int(re.search(r"^%s:\s+(\d+)" % k, status, re.M).group(1))  # noqa
        with self.lock:
            ok, self.ok = self.ok, 0
            failed = len(self.failures)
        s = {"t": round(now - self.t0, 1),
             "rss_kib": field("VmRSS"), "anon_kib": field("RssAnon"),
             "fds": len(os.listdir("/proc/%d/fd" % pid)),
             "threads": len(os.listdir("/proc/%d/task" % pid)),
             "rps": round(ok / (now - last), 1), "failed_total": failed}
        print("sample t=%6.1fs rss=%6.1f MiB anon=%6.1f MiB fds=%4d threads=%3d "
              "req/s=%6.1f failed=%d" % (s["t"], s["rss_kib"] / 1024, s["anon_kib"] / 1024,
                                         s["fds"], s["threads"], s["rps"], failed), flush=True)
        return s, now

    # --- the whole

    def run(self):
        a = self.a
        self.t0 = time.monotonic()
        self.write_mesh()
        for i in range(BACKENDS):
            self.start_backend(i)
        self.start_controller()
        proxy = self.start_proxy()
        deadline = time.monotonic() + 20
        ready = False
        while time.monotonic() < deadline and proxy.poll() is None:
            try:
                ready = (http_get(self.admin_port, "/ready")[0] == 200 and
                         http_get(self.proxy_port, "/soak/0", "%s:%d" % (BOOKS, PORT))[0] == 200)
            except (OSError, http.client.HTTPException):
                ready = False
            if ready:
                break
            time.sleep(0.05)
        if not ready:
            raise SystemExit("spoke did not become ready within 20 s (see %s)" % self.dir)
        log("spoke pid %d ready; %d s of load and churn" % (proxy.pid, a.duration))

        self.t0 = time.monotonic()
        threads = [threading.Thread(target=self.steady, args=(n, a.rate / a.connections),
                                    daemon=True) for n in range(a.connections)]
        threads += [threading.Thread(target=self.slow, args=(n,), daemon=True)
                    for n in range(a.slow)]
        threads += [threading.Thread(target=f, daemon=True)
                    for f in (self.rotating, self.profiles, self.endpoints, self.schedule)]
        for t in threads:
            t.start()
        samples = []
        last = time.monotonic()
        end = self.t0 + a.duration
        while time.monotonic() < end:
            self.stop.wait(min(a.sample, max(0.0, end - time.monotonic())))
            if proxy.poll() is not None:
                self.problems.append("spoke exited with %s during the run" % proxy.returncode)
                break
            s, last = self.sample(proxy.pid, last)
            samples.append(s)
        self.stop.set()
        for t in threads:
            t.join(15)
            if t.is_alive():
                self.problems.append("a load thread did not stop within 15 s")
        metrics = ""
        try:
            metrics = http_get(self.admin_port, "/metrics")[1].decode()
        except (OSError, http.client.HTTPException) as e:
            self.problems.append("cannot scrape /metrics at the end: %s" % e)
        return summarize(self, samples, metrics)


# ---------------------------------------------------------------- the summary


def slope_per_min(points):
    """Least-squares slope of (t seconds, value) points, per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return 0.0
    return 60.0 * sum((t - mt) * (v - mv) for t, v in points) / den


def classify(f, crashes):
    """The cause of one failure. Only the first group is unavoidable."""
    in_flight_at_crash = any(f["started"] < after and f["ended"] > before
                             for before, after in crashes)
    reason = f["l5d-proxy-error"]
    if (f["method"] == "POST" and f["status"] == 502 and reason in LOST_AFTER_SEND
            and in_flight_at_crash):
        return UNAVOIDABLE
    if in_flight_at_crash and (f["error"] or "").startswith("IncompleteRead"):
        return UNAVOIDABLE_CUT
    what = f["error"] or "%s %s" % (f["status"], reason or "(no l5d-proxy-error)")
    where = " (in flight at a backend SIGKILL)" if in_flight_at_crash else ""
    return "avoidable: %s %s: %s%s" % (f["kind"], f["method"], what, where)


def metric_sum(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^%s(\{[^}]*\})?\s+(\S+)" % re.escape(name), line)
        if not m:
            continue
        lab = m.group(1) or ""
        if all('%s="%s"' % (k, v) in lab for k, v in labels.items()):
            total += float(m.group(2))
    return total


# Growth allowed over the post-warm-up window, of the least-squares line fitted to it.
TOLERANCE = {"rss_kib": 4096, "anon_kib": 4096, "fds": 12, "threads": 8}
UNITS = {"rss_kib": ("MiB", 1024.0), "anon_kib": ("MiB", 1024.0), "fds": ("", 1.0),
         "threads": ("", 1.0), "rps": ("", 1.0)}


def summarize(soak, samples, metrics):
    a = soak.a
    out = []
    fail = list(soak.problems)
    post = [s for s in samples if s["t"] > a.warmup]
    out.append("## spoke soak: %d s, warm-up %d s, %d samples after it" %
               (a.duration, a.warmup, len(post)))
    out.append("")
    out.append("| series | first | last | max | slope /min | fitted growth | allowed |")
    out.append("|---|---|---|---|---|---|---|")
    window_min = (post[-1]["t"] - post[0]["t"]) / 60.0 if len(post) > 1 else 0.0
    for key in ("rss_kib", "anon_kib", "fds", "threads", "rps"):
        if not post:
            break
        unit, div = UNITS[key]
        vals = [s[key] for s in post]
        slope = slope_per_min([(s["t"], s[key]) for s in post])
        growth = slope * window_min
        allowed = TOLERANCE.get(key)
        fmt = (lambda v: "%.2f %s" % (v / div, unit)) if unit else (lambda v: "%.1f" % v)
        out.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            key, fmt(vals[0]), fmt(vals[-1]), fmt(max(vals)), fmt(slope), fmt(growth),
            fmt(allowed) if allowed is not None else "-"))
        if allowed is not None and growth > allowed:
            fail.append("%s grows: %s over the window (allowed %s)" %
                        (key, fmt(growth), fmt(allowed)))
    if len(post) < 3:
        fail.append("too few samples after the warm-up (%d)" % len(post))
    out.append("")
    total = soak.ok_total + len(soak.failures)
    out.append("requests: %d, failed: %d; average %.1f req/s" %
               (total, len(soak.failures), soak.ok_total / max(1.0, a.duration)))
    groups = {}
    for f in soak.failures:
        groups.setdefault(classify(f, soak.crashes), []).append(f)
    if groups:
        out.append("failures by cause:")
        for cause, fs in sorted(groups.items()):
            out.append("  %5d  %s  (t=%s)" % (len(fs), cause,
                                              ", ".join("%.1f" % f["t"] for f in fs[:8])))
            if not cause.startswith("unavoidable"):
                fail.append("%d avoidable failures: %s" % (len(fs), cause))
    out.append("scenario: " + ", ".join("%s %d" % kv for kv in soak.events.items()))
    out.append("spoke counters: profile messages %d, endpoint messages %d, discovery "
               "reconnects %d, connect retries %d" % (
                   metric_sum(metrics, "spoke_discovery_messages_total", kind="profile"),
                   metric_sum(metrics, "spoke_discovery_messages_total", kind="endpoints"),
                   metric_sum(metrics, "spoke_discovery_reconnects_total"),
                   metric_sum(metrics, "spoke_connect_retries_total")))
    ev = soak.events
    for key, least in (("controller SIGKILL", 1), ("backend SIGKILL restarts", 1),
                       ("backend drained restarts", 1), ("slow requests", 1),
                       ("rotating-name requests", 1)):
        if ev[key] < least and a.duration >= 60:
            fail.append("the scenario did not run: %s = %d" % (key, ev[key]))
    out.append("")
    if fail:
        out.append("RESULT: FAIL")
        out.extend("  - " + x for x in fail)
    else:
        out.append("RESULT: PASS")
    print("\n".join(out), flush=True)
    with open(os.path.join(soak.dir, "samples.jsonl"), "w") as fh:
        for s in samples:
            fh.write(json.dumps(s) + "\n")
    with open(os.path.join(soak.dir, "failures.jsonl"), "w") as fh:
        for f in soak.failures:
            fh.write(json.dumps(dict(f, cause=classify(f, soak.crashes))) + "\n")
    return 1 if fail else 0


def cmd_selftest(_args):
    """Checks the pure parts of the verdict: the trend and the failure classes."""
    assert abs(slope_per_min([(0, 1.0), (30, 2.0), (60, 3.0)]) - 2.0) < 1e-9
    assert slope_per_min([(5, 7.0)]) == 0.0
    crash = [(100.0, 100.01)]

    def fail(method, started, ended, status=502, reason=LOST_AFTER_SEND[1], error=None):
        return {"kind": "steady", "method": method, "started": started, "ended": ended,
                "status": status, "l5d-proxy-error": reason, "error": error}

    # In flight across the kill, a POST the proxy may not repeat: unavoidable.
    assert classify(fail("POST", 99.9, 100.2), crash) == UNAVOIDABLE
    assert classify(fail("POST", 99.9, 100.2, reason=LOST_AFTER_SEND[0]), crash) == UNAVOIDABLE
    # The same for a GET, which the proxy retries elsewhere: avoidable.
    assert classify(fail("GET", 99.9, 100.2), crash).startswith("avoidable")
    # A POST that started after the kill (nothing of it reached the dead backend), or ended
    # before it, or failed for another reason: avoidable.
    assert classify(fail("POST", 100.05, 100.3), crash).startswith("avoidable")
    assert classify(fail("POST", 99.0, 99.5), crash).startswith("avoidable")
    assert classify(fail("POST", 99.9, 100.2, reason="connection refused"),
                    crash).startswith("avoidable")
    assert classify(fail("POST", 99.9, 100.2, status=None, reason=None,
                         error="timeout: timed out"), crash).startswith("avoidable")
    # A body cut by the kill after its head went out, for any method: unavoidable; the same
    # cut with no kill around it: avoidable.
    cut = "IncompleteRead: IncompleteRead(0 bytes read, 3 more expected)"
    assert classify(fail("GET", 99.9, 100.2, status=None, reason=None, error=cut),
                    crash) == UNAVOIDABLE_CUT
    assert classify(fail("GET", 98.0, 98.2, status=None, reason=None, error=cut),
                    crash).startswith("avoidable")
    assert metric_sum('a_total{kind="x"} 2\na_total{kind="y"} 3\nab 9\n', "a_total") == 5
    assert metric_sum('a_total{kind="x"} 2\na_total{kind="y"} 3\n', "a_total", kind="y") == 3
    print("soak.py selftest: ok")
    return 0


def cmd_run(args):
    if args.duration < 10:
        raise SystemExit("--duration must be at least 10 s")
    if args.warmup is None:
        args.warmup = min(120, max(15, args.duration // 3))
    if args.sample is None:
        args.sample = 2 if args.duration <= 120 else 5
    os.makedirs(args.dir, exist_ok=True)
    if args.port_base == 0:
        args.port_base = free_port_base()
    soak = Soak(args)

    def on_signal(*_):
        raise SystemExit(130)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return soak.run()
    finally:
        soak.stop.set()
        soak.procs.kill_all()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--spoke", required=True, help="the spoke binary")
    r.add_argument("--duration", type=int, default=600, help="seconds of load and churn")
    r.add_argument("--warmup", type=int, help="seconds left out of the trends")
    r.add_argument("--sample", type=float, help="seconds between samples")
    r.add_argument("--rate", type=float, default=300.0, help="steady GET/POST req/s in all")
    r.add_argument("--connections", type=int, default=8, help="steady keep-alive connections")
    r.add_argument("--slow", type=int, default=2, help="slow (trickling) clients")
    r.add_argument("--idle-timeout", default="2s", help="discovery idle timeout")
    r.add_argument("--port-base", type=int, default=0,
                   help="ports base+1 … base+13; 0 picks a free range")
    r.add_argument("--dir", required=True, help="working directory (file, logs, raw data)")
    b = sub.add_parser("backend")
    b.add_argument("--port", type=int, required=True)
    sub.add_parser("selftest")
    args = p.parse_args()
    return {"run": cmd_run, "backend": cmd_backend, "selftest": cmd_selftest}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
