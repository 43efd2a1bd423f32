#!/usr/bin/env python3
"""What the benchmark's report scripts share (report.py, report_opaque.py, report_mtls.py):
the median of a run's figures, number formatting, Markdown tables and reading raw.jsonl.
Pure; no I/O but `load`.
"""

import json


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2.0


def fmt(v, digits=0, unit=""):
    if v is None:
        return "—"
    return ("{:,.%df}" % digits).format(v) + unit


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def load(path):
    recs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                recs.append(json.loads(line))
    return recs
