#!/usr/bin/env python3
"""The HTTP/2 benchmark's report, from bench/h2.sh's raw lines (`report_h2.py RAW`).

Input: the raw records whose kind starts with "h2" (h2-meta, h2, h2-idle, h2-mem,
h2-spoke-metrics). Output: Markdown on stdout. Pure formatting and arithmetic; README.md
beside this file defines every column. `report_h2.py selftest` checks the arithmetic on
made-up records.
"""

import json
import sys

from report_util import fmt, load, median, table

ORDER = ["direct", "haproxy", "nginx", "nginx-h1", "spoke"]
LABEL = {
    "direct": "direct (no proxy)",
    "haproxy": "haproxy (1 thread, `proto h2` both sides)",
    "nginx": "nginx (1 worker, `grpc_pass`: h2c upstream)",
    "nginx-h1": "nginx (1 worker, `proxy_pass`: HTTP/1.1 upstream)",
    "spoke": "spoke (outbound, embedded controller)",
}
AIM_RPS = 1.0  # spoke's requests/s at least haproxy's
AIM_CPU = 1.0  # at no more CPU per request


def is_h2(rec):
    return str(rec.get("kind", "")).startswith("h2")


def per_run(rec):
    """The figures of one h2load run."""
    r, hz = rec["result"], float(rec["clk_tck"])
    wall = rec.get("wall_s") or None
    done = r.get("done") or 0
    cpu = rec["cpu_ticks"] / hz
    non2xx = sum(r.get(k, 0) for k in ("status_3xx", "status_4xx", "status_5xx"))
    return {
        "rate": r.get("succeeded", 0) / float(rec["duration_s"]),
        "cpu": cpu * 1e6 / done if rec.get("has_proxy") and done else None,
        "proxy_busy": 100.0 * cpu / wall if rec.get("has_proxy") and wall else None,
        "cpu0_busy": 100.0 * (rec["backend_ticks"] + rec["h2load_ticks"]) / hz / wall
        if wall else None,
        "steal0": 100.0 * rec.get("steal_ticks_cpu0", 0) / hz / wall if wall else None,
        "steal1": 100.0 * rec.get("steal_ticks_cpu1", 0) / hz / wall if wall else None,
        "errors": r.get("failed", 0) + r.get("errored", 0) + r.get("timeout", 0) + non2xx,
    }


def summarize(recs):
    """(streams, target) -> medians over the runs, min/max of the rate, summed errors."""
    runs = {}
    for rec in recs:
        if rec.get("kind") == "h2":
            runs.setdefault((rec["streams"], rec["target"]), []).append(per_run(rec))
    s = {}
    for key, rs in runs.items():
        d = {k: median([r[k] for r in rs]) for k in
             ("rate", "cpu", "proxy_busy", "cpu0_busy", "steal0", "steal1")}
        rates = [r["rate"] for r in rs]
        d["min"], d["max"] = min(rates), max(rates)
        d["errors"] = sum(r["errors"] for r in rs)
        d["runs"] = len(rs)
        s[key] = d
    return s


def idle_per_conn(rec):
    """KiB of RSS and of anonymous memory per connection held, from one h2-idle record."""
    n = rec["result"].get("ready") or 0
    if not n:
        return None, None, None
    b, a = rec["before"], rec["after"]
    return ((a["rss_kib"] - b["rss_kib"]) / float(n), (a["anon_kib"] - b["anon_kib"]) / float(n),
            a["fds"] - b["fds"])


def pct(v):
    return fmt(v, 0, " %")


def render(recs):
    recs = [r for r in recs if is_h2(r)]
    meta = next((r for r in recs if r["kind"] == "h2-meta"), {})
    s = summarize(recs)
    targets = [t for t in ORDER if any(k[1] == t for k in s)]
    out = ["# spoke benchmark: HTTP/2 (h2c both sides), %s\n" % meta.get("date", "?")]
    out.append(
        "Machine: %s CPUs (%s), kernel %s; load average before the run %s, CPUs %s%% busy. "
        "h2load %s (1 thread, CPU 0) with the backend (nginx %s, `http2` listener, fixed "
        "200) on CPU 0; the proxy under test alone on CPU 1. Every request is `GET %s` "
        "(h2load `--connect-to` the target's port). %s connections, %s runs of %s s per "
        "target and stream count, in rounds, one target later each round; medians.%s\n"
        % (meta.get("nproc"), meta.get("cpu"), meta.get("kernel"), meta.get("loadavg"),
           meta.get("busy_before_pct"), meta.get("h2load"), meta.get("nginx"),
           meta.get("uri"), meta.get("conns"), meta.get("runs"), meta.get("duration_s"),
           " **Quick run** (a smoke test of the setup, not figures)." if meta.get("quick")
           else ""))
    if (meta.get("busy_before_pct") or 0) > 5:
        out.append("**Warning:** the machine was %s%% busy before the run started; these "
                   "numbers are not trustworthy.\n" % meta.get("busy_before_pct"))

    for m in meta.get("streams", sorted({k[0] for k in s})):
        rows = []
        for t in targets:
            d = s.get((m, t))
            if not d:
                continue
            rows.append([
                LABEL[t], fmt(d["rate"]), "%s – %s" % (fmt(d["min"]), fmt(d["max"])),
                fmt(d["cpu"], 1), pct(d["proxy_busy"]), pct(d["cpu0_busy"]),
                "%.1f / %.1f %%" % (d["steal0"], d["steal1"]) if d["steal0"] is not None
                else "—", d["errors"],
            ])
        if rows:
            out.append("## %s concurrent streams per connection (`-m%s`), %s connections\n"
                       % (m, m, meta.get("conns")))
            out.append(table(
                ["target", "req/s (median)", "runs min – max", "proxy CPU µs/req",
                 "proxy busy", "CPU 0 busy (h2load + backend)", "host steal CPU 0 / 1",
                 "errors"], rows))
            out.append("")

    idle = [r for r in recs if r["kind"] == "h2-idle"]
    if idle:
        by = {}
        for r in idle:
            by.setdefault(r["target"], {})[r["mode"]] = r
        rows = []
        for t in ORDER:
            if t not in by:
                continue
            cells = [LABEL[t]]
            notes = []
            for mode in ("settings", "request"):
                r = by[t].get(mode)
                if not r:
                    cells += ["—", "—", "—"]
                    continue
                rss, anon, fds = idle_per_conn(r)
                cells += [fmt(rss, 1), fmt(anon, 1), fds if fds is not None else "—"]
                res = r["result"]
                if res.get("ready") != res.get("conns") or res.get("closed_by_peer"):
                    notes.append("%s: %s of %s ready, %s closed by the proxy" % (
                        mode, res.get("ready"), res.get("conns"), res.get("closed_by_peer")))
                if mode == "request" and res.get("answered_200") != res.get("ready"):
                    notes.append("request: %s of %s answered 200" % (res.get("answered_200"),
                                                                     res.get("ready")))
            cells.append("; ".join(notes) or "all ready, none closed")
            rows.append(cells)
        out.append("## Idle HTTP/2 connections: memory per connection\n")
        out.append(
            "%s connections held open by `h2idle.py` (CPU 0), on proxies that had served "
            "nothing yet: first after the preface and SETTINGS exchange only, then, with "
            "those still open, %s more that each made one request and are now idle. Each "
            "figure is the proxy's memory increase over the connections in that state.\n"
            % (meta.get("idle_conns"), meta.get("idle_conns")))
        out.append(table(
            ["proxy", "handshake only: RSS KiB/conn", "anon KiB/conn", "fds added",
             "after one request: RSS KiB/conn", "anon KiB/conn", "fds added", "check"], rows))
        out.append("")

    mem = {}
    for r in recs:
        if r["kind"] == "h2-mem":
            mem.setdefault(r["target"], {})[r["phase"]] = r
    if mem:
        rows = []
        for t in ORDER:
            if t not in mem:
                continue
            i, a = mem[t].get("idle", {}), mem[t].get("after", {})
            rows.append([LABEL[t], fmt(i.get("rss_kib", 0) / 1024.0, 1),
                         fmt(i.get("anon_kib", 0) / 1024.0, 1),
                         fmt(a.get("hwm_kib", 0) / 1024.0, 1), i.get("threads", "—")])
        out.append("## Process memory\n")
        out.append(table(["proxy", "idle RSS MiB (before anything)", "idle anon MiB",
                          "peak RSS MiB after the runs (VmHWM)", "threads"], rows))
        out.append("")

    rows = []
    for m in meta.get("streams", []):
        sp, ha = s.get((m, "spoke")), s.get((m, "haproxy"))
        if not sp or not ha or not ha["rate"] or not ha["cpu"] or sp["cpu"] is None:
            continue
        rr, cr = sp["rate"] / ha["rate"], sp["cpu"] / ha["cpu"]
        rows.append(["`-m%s`" % m, "%.2f×" % rr, "≥ %.1f×" % AIM_RPS,
                     "met" if rr >= AIM_RPS else "not met", "%.2f×" % cr, "≤ %.1f×" % AIM_CPU,
                     "met" if cr <= AIM_CPU else "not met"])
    if rows:
        out.append("## Targets: spoke against haproxy, same run\n")
        out.append(table(["streams", "req/s ratio", "aim", "", "CPU µs/req ratio", "aim", ""],
                         rows))
        out.append("")

    sm = next((r for r in recs if r["kind"] == "h2-spoke-metrics"), None)
    if sm and sm.get("lines"):
        out.append("spoke's counters after the runs: %s\n"
                   % "; ".join("`%s`" % x for x in sm["lines"]))
    out.append("## Raw measurements\n")
    out.append("```")
    out += [json.dumps(r) for r in recs]
    out.append("```")
    return "\n".join(out)


def selftest():
    run = {"kind": "h2", "target": "spoke", "streams": 10, "duration_s": 5, "wall_s": 5.0,
           "cpu_ticks": 250, "backend_ticks": 100, "h2load_ticks": 150, "clk_tck": 100,
           "has_proxy": True, "steal_ticks_cpu0": 5, "steal_ticks_cpu1": 0,
           "result": {"done": 100000, "succeeded": 99990, "failed": 10, "errored": 0,
                      "timeout": 0, "status_2xx": 99990, "status_5xx": 0}}
    d = per_run(run)
    assert abs(d["rate"] - 19998.0) < 1e-9, d
    assert abs(d["cpu"] - 25.0) < 1e-9, d  # 2.5 s over 100,000 requests
    assert abs(d["proxy_busy"] - 50.0) < 1e-9 and abs(d["cpu0_busy"] - 50.0) < 1e-9, d
    assert d["errors"] == 10, d
    idle = {"result": {"ready": 100}, "before": {"rss_kib": 1000, "anon_kib": 500, "fds": 10},
            "after": {"rss_kib": 2600, "anon_kib": 1500, "fds": 110}}
    assert idle_per_conn(idle) == (16.0, 10.0, 100)
    text = render([{"kind": "h2-meta", "streams": [10], "conns": 8}, run,
                   dict(run, target="haproxy", cpu_ticks=300)])
    assert "| `-m10` | 1.00× | ≥ 1.0× | met | 0.83× | ≤ 1.0× | met |" in text, text
    print("report_h2 selftest: ok")


def main():
    if sys.argv[1:2] == ["selftest"]:
        return selftest()
    print(render(load(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
