#!/usr/bin/env python3
"""spoke-only benchmark cases for bench/run.sh (Python 3 stdlib only).

Subcommands:
  yaml    write the embedded controller file for one case to stdout:
            plain   books with a ServiceProfile that has no routes;
            routes  books with N routes (`/r{i}/[^/]+`), requests hit the last one;
            update  books with one route `/upd/[^/]+` named --name (profile-update case);
            dests   N services svc{i} (one route each), all pointing at the backend.
  touch   send one request to each of N destinations (Host svc{i}...:7000) so that each
          becomes live (a profile and an endpoints discovery stream, one thread each).
  update  time live profile updates: rename the route in the file, measure until requests
          are counted under the new route name in /metrics.

run.sh starts and stops spoke and reads its memory; this file only talks HTTP to it and
writes its controller file. Output of touch/update is one JSON object on stdout.
"""

import argparse
import http.client
import json
import os
import random
import re
import sys
import threading
import time

DOMAIN = "default.svc.cluster.local"
PORT = 7000


def endpoints_doc(name, backend):
    return (
        "---\napiVersion: spoke.dev/v1alpha1\nkind: Endpoints\n"
        "metadata:\n  name: %s\nspec:\n  ports:\n  - port: %d\n    addresses:\n    - %s\n"
        % (name, PORT, backend)
    )


def profile_doc(name, routes):
    """routes: list of (route name, path regex); an empty list gives `routes: []`."""
    out = [
        "---\napiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\n"
        "metadata:\n  name: %s\n  namespace: default\nspec:\n" % name
    ]
    if not routes:
        out.append("  routes: []\n")
    else:
        out.append("  routes:\n")
        for rname, regex in routes:
            out.append(
                "  - name: %s\n    condition:\n      method: GET\n      pathRegex: %s\n"
                % (json.dumps(rname), json.dumps(regex))
            )
    return "".join(out)


def books():
    return "books.%s" % DOMAIN


def yaml_text(kind, n, name, backend):
    if kind == "plain":
        return profile_doc(books(), []) + endpoints_doc(books(), backend)
    if kind == "routes":
        routes = [("GET /r%d/{id}" % i, "/r%d/[^/]+" % i) for i in range(n)]
        return profile_doc(books(), routes) + endpoints_doc(books(), backend)
    if kind == "update":
        return profile_doc(books(), [(name, "/upd/[^/]+")]) + endpoints_doc(books(), backend)
    if kind == "dests":
        docs = []
        for i in range(n):
            svc = "svc%d.%s" % (i, DOMAIN)
            docs.append(profile_doc(svc, [("GET /r/{id}", "/r/[^/]+")]))
            docs.append(endpoints_doc(svc, backend))
        return "".join(docs)
    raise ValueError("unknown yaml kind %r" % kind)


def write_atomically(path, text):
    """The controller polls the file; a rename means it never reads half a file."""
    tmp = "%s.tmp%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def split_addr(addr):
    host, _, port = addr.rpartition(":")
    return host, int(port)


def get(conn, path, host):
    conn.request("GET", path, headers={"Host": host})
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, body


# ---------------------------------------------------------------- touch


def cmd_touch(args):
    host, port = split_addr(args.proxy)
    statuses = {}
    lock = threading.Lock()

    deadline = time.monotonic() + args.deadline

    def worker(k):
        conn = None
        for i in range(k, args.count, args.concurrency):
            if time.monotonic() > deadline:
                with lock:
                    statuses["not sent (deadline)"] = statuses.get("not sent (deadline)", 0) + 1
                continue
            authority = "svc%d.%s:%d" % (i, DOMAIN, PORT)
            for attempt in range(2):
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(host, port, timeout=10)
                    status, _ = get(conn, "/r/x", authority)
                    key = str(status)
                    break
                except (OSError, http.client.HTTPException) as e:
                    conn = None
                    key = "error: %s" % type(e).__name__
            with lock:
                statuses[key] = statuses.get(key, 0) + 1

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    streams = {}
    try:
        text = metrics_text(args.admin)
        for kind in ("profile", "endpoints"):
            streams[kind] = metric_value(
                text, 'spoke_discovery_streams_opened_total{kind="%s"}' % kind
            )
    except (OSError, http.client.HTTPException):
        pass
    ok = statuses.get("200", 0)
    print(
        json.dumps(
            {
                "count": args.count,
                "ok": ok,
                "statuses": statuses,
                "seconds": round(elapsed, 2),
                "streams_opened": streams,
            }
        )
    )
    return 0 if ok == args.count else 1


# ---------------------------------------------------------------- update


def metrics_text(admin):
    host, port = split_addr(admin)
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        status, body = get(conn, "/metrics", admin)
    finally:
        conn.close()
    if status != 200:
        raise OSError("GET /metrics answered %d" % status)
    return body.decode("utf-8", "replace")


def metric_value(text, series):
    """Value of one exact series (`name{labels}`), or None when absent."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            try:
                return float(line[len(series) + 1 :].split()[0])
            except (ValueError, IndexError):
                return None
    return None


def route_seen(text, route):
    pat = re.compile(r'^route_request_total\{[^}]*rt_route="%s"' % re.escape(route))
    return any(pat.match(line) for line in text.splitlines())


def cmd_update(args):
    host, port = split_addr(args.proxy)
    authority = "%s:%d" % (books(), PORT)
    stop = threading.Event()
    sent = [0, 0]  # requests, non-200

    def request_loop():
        conn = None
        while not stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=5)
                status, _ = get(conn, "/upd/x", authority)
                sent[0] += 1
                if status == 200:
                    ok_seen.set()
                else:
                    sent[1] += 1
            except (OSError, http.client.HTTPException):
                conn = None
                sent[1] += 1
            time.sleep(args.request_every / 1000.0)

    ok_seen = threading.Event()
    loop = threading.Thread(target=request_loop, daemon=True)
    loop.start()
    # The first request makes the destination live; measure only once requests succeed.
    if not ok_seen.wait(timeout=10.0):
        stop.set()
        print(json.dumps({"updates": args.count, "failed": args.count,
                          "error": "no 200 from the proxy within 10 s"}))
        return 1
    time.sleep(0.2)
    sent_before = list(sent)
    started = time.monotonic()

    swap_sum = 'spoke_discovery_swap_latency_ms_sum{kind="profile"}'
    swap_count = 'spoke_discovery_swap_latency_ms_count{kind="profile"}'
    messages = 'spoke_discovery_messages_total{kind="profile"}'
    write_to_route, msg_to_route, swaps = [], [], []
    failures = 0
    for k in range(1, args.count + 1):
        name = "update-%d" % k
        before = metrics_text(args.admin)
        msgs0 = metric_value(before, messages) or 0.0
        sum0 = metric_value(before, swap_sum) or 0.0
        cnt0 = metric_value(before, swap_count) or 0.0
        write_atomically(args.file, yaml_text("update", 0, name, args.backend))
        t_write = time.monotonic()
        t_msg = t_route = None
        text = ""
        while time.monotonic() - t_write < args.timeout:
            text = metrics_text(args.admin)
            now = time.monotonic()
            if t_msg is None and (metric_value(text, messages) or 0.0) > msgs0:
                t_msg = now
            if route_seen(text, name):
                t_route = now
                break
            time.sleep(args.poll_every / 1000.0)
        if t_route is None:
            failures += 1
            continue
        write_to_route.append((t_route - t_write) * 1000.0)
        if t_msg is not None:
            msg_to_route.append((t_route - t_msg) * 1000.0)
        dsum = (metric_value(text, swap_sum) or 0.0) - sum0
        dcnt = (metric_value(text, swap_count) or 0.0) - cnt0
        if dcnt > 0:
            swaps.append(dsum / dcnt)
        # Land the next write at a random phase of the controller's 250 ms file poll.
        time.sleep(random.uniform(0.1, 0.35))
    stop.set()
    loop.join(timeout=5)
    elapsed = time.monotonic() - started

    def median(xs):
        xs = sorted(xs)
        return round(xs[len(xs) // 2], 2) if xs else None

    print(
        json.dumps(
            {
                "updates": args.count,
                "failed": failures,
                "write_to_route_ms": [round(x, 2) for x in write_to_route],
                "write_to_route_ms_median": median(write_to_route),
                "msg_to_route_ms": [round(x, 2) for x in msg_to_route],
                "msg_to_route_ms_median": median(msg_to_route),
                "swap_ms_mean": [round(x, 3) for x in swaps],
                "swap_ms_median": median(swaps),
                "poll_every_ms": args.poll_every,
                "request_every_ms": args.request_every,
                "requests": sent[0] - sent_before[0],
                "request_errors": sent[1] - sent_before[1],
                "requests_per_s": round((sent[0] - sent_before[0]) / elapsed, 1),
            }
        )
    )
    return 0 if failures == 0 else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    y = sub.add_parser("yaml", help="write a controller file to stdout")
    y.add_argument("kind", choices=["plain", "routes", "update", "dests"])
    y.add_argument("--n", type=int, default=100)
    y.add_argument("--name", default="update-0")
    y.add_argument("--backend", required=True, help="IP:port of the backend")
    t = sub.add_parser("touch", help="one request to each of N destinations")
    t.add_argument("--proxy", required=True)
    t.add_argument("--admin", required=True)
    t.add_argument("--count", type=int, default=1000)
    t.add_argument("--concurrency", type=int, default=32)
    t.add_argument("--deadline", type=float, default=90.0, help="seconds; later ones are skipped")
    u = sub.add_parser("update", help="time live profile updates")
    u.add_argument("--proxy", required=True)
    u.add_argument("--admin", required=True)
    u.add_argument("--file", required=True, help="the controller file spoke watches")
    u.add_argument("--backend", required=True)
    u.add_argument("--count", type=int, default=7)
    u.add_argument("--timeout", type=float, default=5.0, help="seconds per update")
    u.add_argument("--poll-every", type=float, default=2.0, help="ms between /metrics reads")
    u.add_argument("--request-every", type=float, default=0.5, help="ms between requests")
    args = p.parse_args()
    if args.cmd == "yaml":
        sys.stdout.write(yaml_text(args.kind, args.n, args.name, args.backend))
        return 0
    if args.cmd == "touch":
        return cmd_touch(args)
    return cmd_update(args)


if __name__ == "__main__":
    sys.exit(main())
