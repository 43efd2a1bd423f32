#!/usr/bin/env python3
"""Renders bench/run.sh's raw measurements (JSON lines) as the Markdown report.

Input: the raw.jsonl that run.sh appends to (one object per measurement: meta, wrk, latency,
mem, update, dests; opaque.sh's opaque-* records, rendered by report_opaque.py). Output: Markdown on stdout, including the raw lines at the end so a
report can be re-checked. Pure formatting and arithmetic: no processes, no network.
README.md beside this file defines every column.
"""

import json
import sys

import report_mtls
import report_opaque
from report_util import fmt, load, median, table

ORDER = ["direct", "nginx", "haproxy", "spoke", "spoke-routes"]
LABEL = {
    "direct": "direct (no proxy)",
    "nginx": "nginx (1 worker, upstream keep-alive)",
    "haproxy": "haproxy (1 thread)",
    "spoke": "spoke (profile without routes)",
    "spoke-routes": "spoke (100 routes, last one matches)",
}
MIB = 1024.0


def mib(kib):
    return None if kib is None else kib / MIB






def summarize(recs):
    """Per target: median rps, median CPU µs/request, busy %, latency, memory."""
    s = {}
    for r in recs:
        t = r.get("target")
        if t is None:
            continue
        d = s.setdefault(t, {"wrk": [], "lat": {}, "mem": {}})
        if r["kind"] == "wrk":
            d["wrk"].append(r)
        elif r["kind"] == "latency":
            d["lat"][r["layout"]] = r["result"]
            d.setdefault("lat_rec", {})[r["layout"]] = r
        elif r["kind"] == "mem":
            d["mem"][r["phase"]] = r
        else:
            d[r["kind"]] = r
    for t, d in s.items():
        runs = d["wrk"]
        d["rps"] = median([r["rps"] for r in runs])
        d["rps_min"] = min((r["rps"] for r in runs), default=None)
        d["rps_max"] = max((r["rps"] for r in runs), default=None)
        d["steal"] = steal_pct(runs, lambda r: r["seconds"])
        d["errors"] = sum(r["non2xx"] + r["socket_errors"] for r in runs)
        if runs and runs[0].get("has_proxy"):
            d["cpu_us"] = median(
                [r["cpu_ticks"] / r["clk_tck"] * 1e6 / r["requests"] for r in runs if r["requests"]]
            )
            d["busy"] = median(
                [100.0 * r["cpu_ticks"] / r["clk_tck"] / r["seconds"] for r in runs if r["seconds"]]
            )
        else:
            d["cpu_us"] = d["busy"] = None
    return s


def steal_pct(records, seconds):
    """Host steal of CPU 0 / CPU 1 over the given runs, as "a / b %" text (None if unknown)."""
    recs = [r for r in records if "steal_ticks_cpu0" in r and seconds(r)]
    if not recs:
        return None
    wall = sum(seconds(r) * r["clk_tck"] for r in recs)
    c0 = sum(r["steal_ticks_cpu0"] for r in recs) * 100.0 / wall
    c1 = sum(r["steal_ticks_cpu1"] for r in recs) * 100.0 / wall
    return "%.1f / %.1f %%" % (c0, c1)


def lat_steal(rec):
    if not rec:
        return None
    return steal_pct([rec], lambda r: r["result"].get("elapsed_s"))


def lat_of(s, target, layout):
    lat = s.get(target, {}).get("lat", {})
    return lat.get(layout) or lat.get("both")


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def render(recs):
    http = [r for r in recs if not report_opaque.is_opaque(r) and not report_mtls.is_mtls(r)]
    if http:
        out = render_http(http)
    else:
        meta = next((r for r in recs if r.get("kind") == "opaque-meta"), None)
        what = "opaque TCP"
        if meta is None:
            meta = next((r for r in recs if r.get("kind") == "mtls-meta"), {})
            what = "mTLS hop"
        out = ["# spoke benchmark: %s, %s\n" % (what, meta.get("date", "?")),
               "Machine: %s CPUs, %s, kernel %s.\n"
               % (meta.get("nproc"), meta.get("cpu", "?"), meta.get("kernel"))]
    out += report_opaque.render(recs)
    mtls = [r for r in recs if report_mtls.is_mtls(r)]
    if mtls:
        out.append(report_mtls.render(mtls))
    out.append("<details><summary>raw measurements</summary>\n\n```")
    out += [json.dumps(r) for r in recs]
    out.append("```\n</details>")
    return "\n".join(out) + "\n"


def render_http(recs):
    """The HTTP/1.1 sections (everything run.sh measures itself), as Markdown lines."""
    meta = next((r for r in recs if r.get("kind") == "meta"), {})
    s = summarize(recs)
    targets = [t for t in ORDER if t in s]
    out = []
    out.append("# spoke benchmark, %s\n" % meta.get("date", "?"))
    out.append(
        "Machine: %s CPUs, %s, kernel %s. nginx %s, haproxy %s, wrk %s. "
        "CPU busy before the run: %s%%.\n"
        % (
            meta.get("nproc"),
            meta.get("cpu"),
            meta.get("kernel"),
            meta.get("nginx"),
            meta.get("haproxy"),
            meta.get("wrk"),
            meta.get("busy_before_pct"),
        )
    )
    out.append(
        "Layout: proxy alone on CPU 1; backend (nginx, fixed 200) and load generator on CPU 0. "
        "Every request is `GET %s` with `Host: books.default.svc.cluster.local:7000`. "
        "Throughput: wrk, 1 thread, %s keep-alive connections, %s s per run in %s s slices "
        "interleaved with the other targets' slices, median of %s runs. "
        "Latency: bench/loadgen.py at a fixed %s req/s for %s s over %s connections, measured "
        "from each request's intended send time (coordinated-omission corrected).\n"
        % (
            meta.get("path"),
            meta.get("conns"),
            meta.get("duration_s"),
            meta.get("slice_s", meta.get("duration_s")),
            meta.get("runs"),
            meta.get("rate"),
            meta.get("lat_duration_s"),
            meta.get("conns"),
        )
    )
    if (meta.get("busy_before_pct") or 0) > 5:
        out.append(
            "**Warning:** the machine was %s%% busy before the run started; these numbers "
            "are not trustworthy.\n" % meta.get("busy_before_pct")
        )

    out.append("## Throughput and CPU\n")
    rows = []
    for t in targets:
        d = s[t]
        rows.append(
            [
                LABEL[t],
                fmt(d["rps"]),
                "%s – %s" % (fmt(d["rps_min"]), fmt(d["rps_max"])),
                fmt(d["cpu_us"], 1),
                fmt(d["busy"], 0, " %"),
                d["steal"] or "—",
                d["errors"],
            ]
        )
    out.append(
        table(
            [
                "target",
                "max req/s (median)",
                "runs min – max",
                "proxy CPU µs/req",
                "proxy process busy",
                "host steal CPU 0 / 1",
                "errors",
            ],
            rows,
        )
    )
    out.append("")

    out.append("## Latency at a fixed %s req/s\n" % meta.get("rate"))
    rows = []
    for t in targets:
        two, one = lat_of(s, t, "2core"), lat_of(s, t, "1core")
        d2, d1 = lat_of(s, "direct", "2core"), lat_of(s, "direct", "1core")
        row = [LABEL[t]]
        for cur, base in ((two, d2), (one, d1)):
            if cur is None:
                row += ["—", "—"]
                continue
            row.append("%s / %s" % (fmt(cur["p50_us"], 0), fmt(cur["p99_us"], 0)))
            if base is None or t == "direct":
                row.append("—")
            else:
                row.append(
                    "%+.0f / %+.0f" % (cur["p50_us"] - base["p50_us"], cur["p99_us"] - base["p99_us"])
                )
        errs = sum(sum(x["errors"].values()) for x in (two, one) if x) if (two or one) else 0
        lat_recs = s.get(t, {}).get("lat_rec", {})
        steals = [lat_steal(lat_recs.get(k)) for k in ("2core", "1core", "both") if lat_recs.get(k)]
        row.append(", ".join(x for x in steals if x) or "—")
        row.append(errs)
        rows.append(row)
    out.append(
        table(
            [
                "target",
                "p50 / p99 µs, 2 cores",
                "added vs direct",
                "p50 / p99 µs, 1 core",
                "added vs direct",
                "host steal CPU 0 / 1",
                "errors",
            ],
            rows,
        )
    )
    out.append("")

    out.append("## Memory\n")
    rows = []
    def binary(name):
        size, stripped = meta.get("bin_" + name), meta.get("bin_%s_stripped" % name)
        if not size:
            return "—"
        text = fmt(size / MIB / MIB, 1, " MiB")
        if stripped and stripped < size * 0.95:
            text += " (%s stripped)" % fmt(stripped / MIB / MIB, 1, " MiB")
        return text

    bins = {"nginx": "nginx", "haproxy": "haproxy", "spoke": "spoke", "spoke-routes": "spoke"}
    for t in targets:
        m = s[t]["mem"]
        idle, peak = m.get("idle"), m.get("peak")
        if idle is None:
            continue
        rows.append(
            [
                LABEL[t],
                binary(bins[t]) if t in bins else "—",
                fmt(mib(idle["rss_kib"]), 1, " MiB"),
                fmt(mib(idle["anon_kib"]), 2, " MiB"),
                fmt(mib(idle["rss_kib"] - idle["anon_kib"]), 1, " MiB"),
                fmt(mib(peak["hwm_kib"]) if peak else None, 1, " MiB"),
                fmt(mib(peak["anon_kib"]) if peak else None, 2, " MiB"),
                idle["threads"],
            ]
        )
    out.append(
        table(
            [
                "target",
                "binary",
                "idle RSS",
                "idle anon",
                "idle file-backed",
                "peak RSS (VmHWM)",
                "anon after load",
                "threads",
            ],
            rows,
        )
    )
    out.append("")

    if "spoke" in s and "spoke-routes" in s:
        a, b = s["spoke"], s["spoke-routes"]
        out.append("## Routed request: 100 routes vs none\n")
        out.append(
            table(
                ["profile", "max req/s", "proxy CPU µs/req"],
                [
                    ["no routes", fmt(a["rps"]), fmt(a["cpu_us"], 2)],
                    ["100 routes, last matches", fmt(b["rps"]), fmt(b["cpu_us"], 2)],
                    [
                        "difference",
                        fmt(None if a["rps"] is None or b["rps"] is None else b["rps"] - a["rps"]),
                        fmt(
                            None
                            if a["cpu_us"] is None or b["cpu_us"] is None
                            else b["cpu_us"] - a["cpu_us"],
                            2,
                        ),
                    ],
                ],
            )
        )
        out.append("")

    upd = s.get("spoke", {}).get("update")
    if upd:
        r = upd["result"]
        out.append("## Live profile update\n")
        out.append(
            table(
                ["measure", "median", "all updates"],
                [
                    [
                        "file written → new route answering (ms; includes the controller's 250 ms file poll)",
                        fmt(r.get("write_to_route_ms_median"), 1),
                        ", ".join("%.0f" % x for x in r.get("write_to_route_ms", [])),
                    ],
                    [
                        "controller send (profile message counted) → new route answering (ms; ±%s ms poll)"
                        % r.get("poll_every_ms"),
                        fmt(r.get("msg_to_route_ms_median"), 1),
                        ", ".join("%.1f" % x for x in r.get("msg_to_route_ms", [])),
                    ],
                    [
                        "spoke_discovery_swap_latency_ms, mean per update (ms)",
                        fmt(r.get("swap_ms_median"), 3),
                        ", ".join("%.3f" % x for x in r.get("swap_ms_mean", [])),
                    ],
                ],
            )
        )
        out.append(
            "\n%s updates, %s failed; %s requests (%s/s) sent during the updates, %s errors.\n"
            % (r.get("updates"), r.get("failed"), r.get("requests"), r.get("requests_per_s"),
               r.get("request_errors"))
        )

    dests = s.get("spoke", {}).get("dests")
    dests_idle = s.get("spoke-dests", {}).get("mem", {}).get("idle")
    if dests:
        r = dests["result"]
        out.append("## 1,000 live destinations\n")
        rows = [
            ["requests answered 200", "%s of %s in %s s" % (r["ok"], r["count"], r["seconds"])],
            [
                "other answers",
                ", ".join("%s: %s" % kv for kv in sorted(r["statuses"].items()) if kv[0] != "200")
                or "none",
            ],
            [
                "discovery streams opened (profile / endpoints)",
                "%s / %s"
                % (
                    fmt(r.get("streams_opened", {}).get("profile")),
                    fmt(r.get("streams_opened", {}).get("endpoints")),
                ),
            ],
            ["threads", dests["threads"]],
            ["RSS of the proxy", fmt(mib(dests["rss_kib"]), 1, " MiB")],
            ["anonymous", fmt(mib(dests["anon_kib"]), 1, " MiB")],
            ["peak RSS (VmHWM)", fmt(mib(dests["hwm_kib"]), 1, " MiB")],
        ]
        if dests.get("controller_rss_kib"):
            rows.append(
                ["RSS of the controller (its own process)",
                 fmt(mib(dests["controller_rss_kib"]), 1, " MiB")]
            )
        if dests_idle:
            rows.append(
                ["proxy RSS before the first request", fmt(mib(dests_idle["rss_kib"]), 1, " MiB")]
            )
        embedded = s.get("spoke", {}).get("dests-embedded")
        if embedded:
            rows.append(
                ["RSS with the embedded controller (one process, %s threads)"
                 % embedded["threads"], fmt(mib(embedded["rss_kib"]), 1, " MiB")]
            )
        out.append(table(["measure", "value"], rows))
        out.append("")

    if "spoke" in s and "nginx" in s:
        sp, ng = s["spoke"], s["nginx"]
        spi, ngi = sp["mem"].get("idle"), ng["mem"].get("idle")
        checks = []

        def check(name, value, shown, ok, goal):
            checks.append([name, shown if value is not None else "—", goal,
                           "—" if value is None else ("pass" if ok else "**FAIL**")])

        r = ratio(sp["rps"], ng["rps"])
        check("throughput, spoke / nginx", r, fmt(r, 2, "×"), r is not None and r >= 1.0,
              "≥ 1.0× (aim 1.3×)")
        r = ratio(sp["cpu_us"], ng["cpu_us"])
        check("CPU per request at maximum, spoke / nginx", r, fmt(r, 2, "×"),
              r is not None and r <= 1.0, "≤ 1.0×")
        r = ratio(spi and spi["rss_kib"], ngi and ngi["rss_kib"])
        check("idle RSS, spoke / nginx", r, fmt(r, 2, "×"), r is not None and r <= 1.0, "≤ 1.0×")
        a = mib(spi["anon_kib"]) if spi else None
        check("idle anonymous memory", a, fmt(a, 2, " MiB"), a is not None and a <= 4.0,
              "≤ 4 MiB")
        d = mib(dests["rss_kib"]) if dests else None
        check("RSS with 1,000 live destinations (the proxy)", d, fmt(d, 1, " MiB"),
              d is not None and d <= 64.0, "≤ 64 MiB")
        out.append("## Targets (spoke against nginx in this run)\n")
        out.append(table(["target", "measured", "goal", "result"], checks))
        if sp.get("busy") is not None and sp["busy"] < 90:
            out.append(
                "\nspoke's process ran %.0f%% of the time at maximum throughput (nginx: %s): "
                "the maximum was set by cross-core wake-ups as much as by CPU cost, so CPU per "
                "request is the steadier comparison (see bench/README.md)."
                % (sp["busy"], fmt(ng.get("busy"), 0, "%"))
            )
        out.append("")
    return out


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: report.py RAW.jsonl\n")
        return 2
    sys.stdout.write(render(load(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
