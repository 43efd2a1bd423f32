#!/usr/bin/env python3
"""The "mTLS hop" sections of the benchmark report, from bench/mtls.sh's raw lines.

Input: the raw records whose kind starts with "mtls" (mtls-meta, mtls, mtls-detect, mtls-tls,
mtls-mem). Output: Markdown. Pure formatting and arithmetic; run alone on a raw.jsonl
(`report_mtls.py RAW`) or used by report.py. README.md beside this file defines every
column.
"""

import json
import sys

from report_util import fmt, load, median, table

KEEPALIVE = ["spoke-plain", "spoke-mtls", "spoke-mtls-h1", "nginx-plain", "nginx-tls"]
NEWCONN = ["spoke-plain-new", "spoke-mtls-new", "nginx-plain-new", "nginx-tls-new"]
LABEL = {
    "spoke-plain": "spoke → spoke, plaintext (endpoint not meshed)",
    "spoke-mtls": "spoke → spoke, mTLS (endpoint with `identity:`), HTTP/1 upgraded to HTTP/2 (`l5d-orig-proto`)",
    "spoke-mtls-h1": "spoke → spoke, mTLS, HTTP/1 kept (`SPOKE_OUTBOUND_ORIG_PROTO_UPGRADE=off`)",
    "nginx-plain": "nginx → nginx, plaintext",
    "nginx-tls": "nginx → nginx, TLS 1.3 with client certificate",
    "spoke-plain-new": "spoke → spoke, plaintext, new TCP connection per request",
    "spoke-mtls-new": "spoke → spoke, mTLS, new connection (full handshake) per request",
    "nginx-plain-new": "nginx → nginx, plaintext, new TCP connection per request",
    "nginx-tls-new": "nginx → nginx, TLS, new connection (full handshake) per request",
}
AIM_CPU = 1.3  # mTLS hop CPU per request at most this many times the plaintext hop's
AIM_HS = 1.0  # spoke's handshake rate at least nginx's


def is_mtls(rec):
    return str(rec.get("kind", "")).startswith("mtls")








def per_run(rec):
    """The figures of one run: rate, CPU µs per request of each proxy and both, busy."""
    reqs, secs, hz = rec["requests"], rec["seconds"], float(rec["clk_tck"])
    a, b = rec["ticks_a"] / hz, rec["ticks_b"] / hz
    per = (lambda s: s * 1e6 / reqs) if reqs else (lambda s: None)
    return {
        "rate": rec["rps"],
        "cpu": per(a + b),
        "cpu_a": per(a),
        "cpu_b": per(b),
        "busy": 100.0 * (a + b) / secs if secs else None,
        "steal0": 100.0 * rec["steal_ticks_cpu0"] / hz / secs if secs else None,
        "steal1": 100.0 * rec["steal_ticks_cpu1"] / hz / secs if secs else None,
        "errors": rec["non2xx"] + rec["socket_errors"],
    }


def summarize(recs):
    """target -> medians over its runs (errors summed), plus the rate's min and max."""
    runs = {}
    for rec in recs:
        if rec.get("kind") == "mtls":
            runs.setdefault(rec["target"], []).append(per_run(rec))
    s = {}
    for t, rs in runs.items():
        m = {k: median([r[k] for r in rs]) for k in rs[0] if k != "errors"}
        m["errors"] = sum(r["errors"] for r in rs)
        m["min"] = min(r["rate"] for r in rs)
        m["max"] = max(r["rate"] for r in rs)
        m["runs"] = len(rs)
        s[t] = m
    return s


def ratio(a, b):
    return a / b if a is not None and b else None


def rows(s, targets, unit):
    out = []
    for t in targets:
        if t not in s:
            continue
        m = s[t]
        out.append([
            LABEL[t], fmt(m["rate"]), "%s – %s" % (fmt(m["min"]), fmt(m["max"])),
            fmt(m["cpu"], 1), "%s + %s" % (fmt(m["cpu_a"], 1), fmt(m["cpu_b"], 1)),
            fmt(m["busy"], 0, " %"),
            "%s / %s %%" % (fmt(m["steal0"], 1), fmt(m["steal1"], 1)), m["errors"],
        ])
    return table([
        "hop", unit + " (median)", "runs min – max", "CPU µs/req, both proxies",
        "proxy A + proxy B", "both proxies busy (of CPU 1)", "host steal CPU 0 / 1", "errors",
    ], out)


def render(recs):
    recs = [r for r in recs if is_mtls(r)]
    meta = next((r for r in recs if r.get("kind") == "mtls-meta"), {})
    s = summarize(recs)
    out = ["## mTLS hop: spoke → spoke and nginx → nginx", ""]
    out.append(
        "A network namespace with only `lo`; the backend (nginx, fixed 200) and wrk on CPU 0, "
        "both proxies of the pair under test on CPU 1. wrk (1 thread, %s keep-alive "
        "connections) talks to proxy A, which forwards to proxy B, which forwards to the "
        "backend over pooled connections. spoke B gets A's connections by an iptables "
        "REDIRECT and reads their original destination. nginx %s with OpenSSL %s: TLS 1.3, "
        "the suites and groups spoke offers, ECDSA P-256 certificates from the same CA as "
        "spoke's, client certificate verified, no session resumption on either side. "
        "%s runs of %s s per row as %s s slices interleaved across the rows; medians. "
        "CPU is user + system time of both proxy processes over the run (`/proc/PID/stat`) "
        "per request wrk completed. CPU busy before the runs: %s %%."
        % (meta.get("conns", "?"), meta.get("nginx", "?"), meta.get("openssl", "?"),
           meta.get("runs", "?"), meta.get("duration_s", "?"), meta.get("slice_s", "?"),
           meta.get("busy_before_pct", "?")))
    out.append("")
    if meta.get("busy_before_pct", 0) > 5:
        out.append("**Warning:** the machine was %s%% busy before the mTLS runs started; "
                   "compare rows of this run only, and expect the absolute numbers to be "
                   "low." % meta["busy_before_pct"])
        out.append("")
    out.append("### Keep-alive: connections between the proxies are reused")
    out.append("")
    out.append(rows(s, KEEPALIVE, "req/s"))
    out.append("")
    out.append("### A new connection at the hop for every request")
    out.append("")
    out.append(
        "wrk keeps its connections to proxy A, and proxy B keeps its connections to the "
        "backend; proxy A keeps none to B, so each request opens one (with a full TLS "
        "handshake on the TLS rows): nginx A's upstream has no `keepalive`, spoke A runs "
        "with `LINKERD2_PROXY_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT=0` and "
        "`SPOKE_OUTBOUND_ORIG_PROTO_UPGRADE=off` (an upgraded request would share one "
        "HTTP/2 connection). The rate is "
        "therefore connections (handshakes) per second at the hop.")
    out.append("")
    out.append(rows(s, NEWCONN, "new connections/s"))
    out.append("")

    def cpu(t):
        return s.get(t, {}).get("cpu")

    def rate(t):
        return s.get(t, {}).get("rate")

    def hs_cost(tls, plain):
        a, b = cpu(tls), cpu(plain)
        return a - b if a is not None and b is not None else None

    out.append("### Targets")
    out.append("")
    tr = []
    sp, ng = ratio(cpu("spoke-mtls"), cpu("spoke-plain")), ratio(cpu("nginx-tls"), cpu("nginx-plain"))
    tr.append(["spoke: mTLS / plaintext hop, CPU µs per request at keep-alive",
               fmt(sp, 2, "×"), "≤ %.1f×" % AIM_CPU,
               "—" if sp is None else ("met" if sp <= AIM_CPU else "missed")])
    h1 = ratio(cpu("spoke-mtls-h1"), cpu("spoke-plain"))
    tr.append(["spoke: mTLS with HTTP/1 kept / plaintext hop, CPU µs per request at keep-alive",
               fmt(h1, 2, "×"), "≤ %.1f×" % AIM_CPU,
               "—" if h1 is None else ("met" if h1 <= AIM_CPU else "missed")])
    tr.append(["nginx: TLS / plaintext hop, CPU µs per request at keep-alive (reference)",
               fmt(ng, 2, "×"), "—", "—"])
    tr.append(["spoke mTLS / nginx TLS hop, CPU µs per request at keep-alive",
               fmt(ratio(cpu("spoke-mtls"), cpu("nginx-tls")), 2, "×"), "—", "—"])
    hs = ratio(rate("spoke-mtls-new"), rate("nginx-tls-new"))
    tr.append(["handshakes/s at the hop: spoke / nginx", fmt(hs, 2, "×"), "≥ %.1f×" % AIM_HS,
               "—" if hs is None else ("met" if hs >= AIM_HS else "missed")])
    tr.append(["CPU µs per handshake, both ends (TLS minus plaintext new-connection row): "
               "spoke / nginx",
               "%s / %s µs" % (fmt(hs_cost("spoke-mtls-new", "spoke-plain-new"), 0),
                               fmt(hs_cost("nginx-tls-new", "nginx-plain-new"), 0)),
               "—", "—"])
    out.append(table(["measure", "this run", "aim", ""], tr))
    out.append("")
    det = [r for r in recs if r.get("kind") == "mtls-detect"]
    if det:
        out.append("spoke B's protocol detection over the whole run (`spoke_detect_total`): "
                   + "; ".join("`%s`" % line for line in det[0]["lines"]) + ".")
        out.append("")
    for r in recs:
        if r.get("kind") == "mtls-tls":
            out.append("What %s negotiates with `openssl s_client` offering spoke's suites and "
                       "groups and the `web` client certificate: %s." % (
                           r["target"], "; ".join(r["lines"]) or "(no answer)"))
            out.append("")
    mem = [r for r in recs if r.get("kind") == "mtls-mem"]
    if mem:
        out.append("Peak RSS after the runs: " + ", ".join(
            "%s %s MiB" % (r["target"], fmt(r["hwm_kib"] / 1024.0, 1)) for r in mem) + ".")
        out.append("")
    return "\n".join(out)


def main():
    recs = load(sys.argv[1])
    meta = next((r for r in recs if r.get("kind") == "mtls-meta"), {})
    print("# spoke benchmark: mTLS hop, %s" % meta.get("date", "?"))
    print()
    print("Machine: %s CPUs (%s), kernel %s." % (meta.get("nproc", "?"), meta.get("cpu", "?"),
                                              meta.get("kernel", "?")))
    print()
    print(render(recs))
    print("## Raw measurements")
    print()
    print("```")
    for r in recs:
        if is_mtls(r):
            print(json.dumps(r))
    print("```")


if __name__ == "__main__":
    main()
