#!/usr/bin/env python3
"""The "Opaque TCP" sections of the benchmark report, from bench/opaque.sh's raw lines.

Input: the raw records whose kind starts with "opaque" (opaque-meta, opaque, opaque-banner,
opaque-mem, opaque-detect, opaque-skip). Output: Markdown lines. Pure formatting and
arithmetic, used by report.py; README.md beside this file defines every column.
"""

from report_util import fmt, median, table

ORDER = ["direct", "haproxy", "nginx", "spoke"]
LABEL = {
    "direct": "direct (no proxy)",
    "haproxy": "haproxy (1 thread, mode tcp)",
    "nginx": "nginx (1 worker, stream)",
    "spoke": "spoke (redirected, original destination)",
    "spoke-quiet": "spoke",
}
GIB = 1024.0 ** 3


def is_opaque(rec):
    return str(rec.get("kind", "")).startswith("opaque")








def run_seconds(rec):
    """Wall time of one run as the generator saw it (bulk: to the last count; ping-pong:
    warm-up included, as the CPU ticks are)."""
    r = rec["result"]
    return r.get("seconds") if rec["case"] == "bulk" else r.get("total_s")


def per_run(rec):
    """The figures of one run: throughput, proxy CPU per unit, busy shares, errors."""
    r, secs = rec["result"], run_seconds(rec)
    cpu = rec["cpu_ticks"] / float(rec["clk_tck"])
    backend = rec["backend_ticks"] / float(rec["clk_tck"])
    out = {
        "errors": r.get("errors", 0) + r.get("count_mismatch", 0),
        "proxy_busy": 100.0 * cpu / secs if secs and rec.get("has_proxy") else None,
        "cpu0_busy": 100.0 * (backend + r.get("gen_cpu_s", 0)) / secs if secs else None,
        "steal0": 100.0 * rec.get("steal_ticks_cpu0", 0) / rec["clk_tck"] / secs if secs else None,
        "steal1": 100.0 * rec.get("steal_ticks_cpu1", 0) / rec["clk_tck"] / secs if secs else None,
    }
    if rec["case"] == "bulk":
        out["rate"] = r.get("mib_per_s")
        out["cpu"] = cpu / (r["bytes"] / GIB) if rec.get("has_proxy") and r.get("bytes") else None
    else:
        out["rate"] = r.get("rt_per_s")
        total = r.get("total_round_trips")
        out["cpu"] = cpu * 1e6 / total if rec.get("has_proxy") and total else None
        out["p50"], out["p99"] = r.get("p50_us"), r.get("p99_us")
    return out


def summarize(recs):
    """(case, target) -> medians over the runs, plus min/max of the rate."""
    runs = {}
    for rec in recs:
        if rec.get("kind") == "opaque":
            runs.setdefault((rec["case"], rec["target"]), []).append(per_run(rec))
    s = {}
    for key, rs in runs.items():
        d = {k: median([r.get(k) for r in rs]) for k in
             ("rate", "cpu", "proxy_busy", "cpu0_busy", "p50", "p99", "steal0", "steal1")}
        rates = [r["rate"] for r in rs if r.get("rate") is not None]
        d["min"], d["max"] = (min(rates), max(rates)) if rates else (None, None)
        d["errors"] = sum(r["errors"] for r in rs)
        d["runs"] = len(rs)
        s[key] = d
    return s


def spread(d, digits=0):
    return "%s – %s" % (fmt(d["min"], digits), fmt(d["max"], digits))


def steal_text(d):
    if d["steal0"] is None:
        return "—"
    return "%.1f / %.1f %%" % (d["steal0"], d["steal1"])


def render(recs):
    recs = [r for r in recs if is_opaque(r)]
    if not recs:
        return []
    meta = next((r for r in recs if r["kind"] == "opaque-meta"), {})
    s = summarize(recs)
    targets = [t for t in ORDER if any(k[1] == t for k in s)]
    out = ["## Opaque TCP\n"]
    out.append(
        "A network namespace with only `lo`; backend and generator (`bench/tcpbench.c`) on "
        "CPU 0, the proxy under test alone on CPU 1. haproxy %s and nginx %s listen on "
        "ports of their own; spoke gets the connections an iptables REDIRECT takes from the "
        "backend's address to its outbound listener, and forwards them to the original "
        "destination as opaque TCP (the bytes are not HTTP). %s runs of %s s per case, the "
        "targets in turn; medians. Kernel %s; CPU busy before the opaque runs: %s%%.\n"
        % (meta.get("haproxy"), meta.get("nginx"), meta.get("runs"), meta.get("duration_s"),
           meta.get("kernel"), meta.get("busy_before_pct"))
    )
    if (meta.get("busy_before_pct") or 0) > 5:
        out.append("**Warning:** the machine was %s%% busy before the opaque runs started; "
                   "these numbers are not trustworthy.\n" % meta.get("busy_before_pct"))
    for skip in (r for r in recs if r["kind"] == "opaque-skip"):
        out.append("**%s skipped**: %s.\n" % (skip["target"], skip["reason"]))

    direct_bulk = s.get(("bulk", "direct"))
    rows = []
    for t in targets:
        d = s.get(("bulk", t))
        if not d:
            continue
        rows.append([
            LABEL[t], fmt(d["rate"]), spread(d),
            fmt(d["rate"] / direct_bulk["rate"] * 100, 0, " %") if direct_bulk and t != "direct"
            and direct_bulk["rate"] else "—",
            fmt(d["cpu"], 2), fmt(d["proxy_busy"], 0, " %"), fmt(d["cpu0_busy"], 0, " %"),
            steal_text(d), d["errors"],
        ])
    if rows:
        out.append("### Bulk: %s connections streaming one way\n" % meta.get("bulk_conns"))
        out.append(table(
            ["target", "MiB/s (median)", "runs min – max", "of direct", "proxy CPU s/GiB",
             "proxy busy", "CPU 0 busy (generator + backend)", "host steal CPU 0 / 1",
             "errors"], rows))
        out.append("")

    for case, title in (
        ("pingpong", "64-byte ping-pong, %s connections" % meta.get("pp_conns")),
        ("rtt1", "64-byte ping-pong, 1 connection"),
        ("rtt1-1core", "64-byte ping-pong, 1 connection, the proxy on CPU 0 too"),
    ):
        # direct has no cross-core hop to remove: its 1-connection run is the base of both.
        base = s.get((case if case != "rtt1-1core" else "rtt1", "direct"))
        rows = []
        for t in targets:
            d = s.get((case, t))
            if case == "rtt1-1core" and t == "direct":
                d = base
            if not d:
                continue
            added = "—"
            if base and t != "direct" and d["p50"] is not None and base["p50"] is not None:
                added = "%+.0f / %+.0f" % (d["p50"] - base["p50"], d["p99"] - base["p99"])
            rows.append([
                LABEL[t], fmt(d["rate"]), spread(d), fmt(d["cpu"], 1),
                "%s / %s" % (fmt(d["p50"]), fmt(d["p99"])), added,
                fmt(d["proxy_busy"], 0, " %"), fmt(d["cpu0_busy"], 0, " %"), steal_text(d),
                d["errors"],
            ])
        if rows:
            out.append("### %s\n" % title)
            out.append(table(
                ["target", "round trips/s (median)", "runs min – max", "proxy CPU µs/round trip",
                 "p50 / p99 µs", "added vs direct", "proxy busy",
                 "CPU 0 busy (generator + backend)", "host steal CPU 0 / 1", "errors"], rows))
            out.append("")

    banners = [r for r in recs if r["kind"] == "opaque-banner"]
    if banners:
        order = {t: i for i, t in enumerate(ORDER + ["spoke-quiet"])}
        banners.sort(key=lambda r: order.get(r["target"], 99))
        rows = []
        for b in banners:
            r = b["result"]
            quiet = b.get("quiet") or "—"
            rows.append([
                LABEL.get(b["target"], b["target"]), quiet,
                fmt(r["median_us"] / 1e3 if r.get("ok") else None, 2),
                "%s – %s" % (fmt(r["min_us"] / 1e3 if r.get("ok") else None, 2),
                             fmt(r["max_us"] / 1e3 if r.get("ok") else None, 2)),
                "%s of %s" % (r.get("ok"), r.get("tried", r.get("count"))),
                r.get("errors"),
            ])
        out.append("### Server speaks first: connect → first banner byte\n")
        out.append(
            "The client connects and sends nothing; the backend writes a banner on accept. "
            "spoke waits for the client's first bytes until its quiet period "
            "(`SPOKE_DETECT_QUIET_TIMEOUT`) passes, then connects and relays whichever side "
            "speaks first. One connection at a time.\n")
        out.append(table(["target", "quiet period", "median ms", "min – max ms", "answered",
                          "errors"], rows))
        out.append("")

    mem = {r["target"]: r for r in recs if r["kind"] == "opaque-mem"}
    detect = {r["target"]: r["lines"] for r in recs if r["kind"] == "opaque-detect"}
    if mem:
        rows = [[LABEL.get(t, t) + (" (quiet %s)" % meta.get("quiet_low") if t == "spoke-quiet"
                                    else ""),
                 fmt(mem[t]["hwm_kib"] / 1024.0, 1, " MiB")]
                for t in ORDER + ["spoke-quiet"] if t in mem]
        out.append(table(["proxy", "peak RSS after the opaque runs (VmHWM)"], rows))
        out.append("")
    for t, lines in sorted(detect.items()):
        if lines:
            out.append("`spoke_detect_total` of %s after the runs: %s\n"
                       % (LABEL.get(t, t) + (" (quiet %s)" % meta.get("quiet_low")
                                             if t == "spoke-quiet" else ""),
                          "; ".join("`%s`" % x for x in lines)))
    return out
