#!/usr/bin/env python3
"""bench/cg_crates.py: whose code a request's instructions run, from two callgrind files.

Usage: cg_crates.py N1 FILE1 N2 FILE2
       cg_crates.py selftest      (the owner rules, for tests/bench_h2.rs)

FILE1 and FILE2 are one thread's callgrind output after N1 and N2 requests (cost_h2.sh's two
runs); every function's self cost is taken at both, and the difference divided by N2 - N1 is
its cost per request. Functions are charged to the crate whose source they come from; code of
the standard library inlined into a function is charged to the crate that function is named
in (`h2::...` to h2, `spoke::...` to spoke), and `memcpy`/`memmove` from libc is a row of its
own (in this path it is almost all h2 moving frames between its queues). Prints one row per
owner of at least 0.5 % of the total, largest first, the rest folded into one row, and the total.
"""

import re
import subprocess
import sys
from collections import Counter

LINE = re.compile(r"\s*([\d,]+) \([ \d.]+%\)\s+(\S+?):(.*)")


def owner(path, func):
    m = re.search(r"/registry/src/[^/]+/([A-Za-z0-9_-]+?)-\d+\.\d+", path)
    if m:
        return m.group(1)
    if "/rustc/" in path or "/rust/deps/" in path:
        for crate in ("spoke", "h2", "http", "bytes", "tokio_util"):
            if re.search(rf"\b{crate}::", func):
                return f"{crate} (std inlined)"
        return "std/core (other)"
    if "memcpy" in func or "memmove" in func:
        return "libc memcpy"
    if path.startswith("./") or "libc.so" in func:
        return "libc other"
    if path.endswith(".rs"):
        return "spoke"  # a Rust file of neither the registry nor the toolchain
    return "other"


def self_costs(path):
    out = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--threshold=100", path],
        capture_output=True, text=True, check=True,
    ).stdout
    costs = Counter()
    for line in out.splitlines():
        m = LINE.match(line)
        if m and "PROGRAM TOTALS" not in line:
            costs[owner(m.group(2), m.group(3))] += int(m.group(1).replace(",", ""))
    return costs


def selftest():
    reg = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f"
    rustc = "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src"
    cases = [
        (f"{reg}/h2-0.4.21/src/hpack/encoder.rs", "h2::hpack::encoder::encode_int", "h2"),
        (f"{reg}/http-1.5.0/src/header/map.rs", "http::header::map::HeaderMap<T>::get", "http"),
        (f"{reg}/tokio-util-0.7.20/src/codec/x.rs", "tokio_util::codec::f", "tokio-util"),
        (f"{rustc}/ptr/mod.rs", "core::ptr::drop_in_place<h2::frame::Frame>", "h2 (std inlined)"),
        (f"{rustc}/ptr/mod.rs", "spoke::proxy::h2::H2World::poll_task", "spoke (std inlined)"),
        (f"{rustc}/hash/sip.rs", "core::hash::BuildHasher::hash_one", "std/core (other)"),
        ("./string/../sysdeps/x86_64/multiarch/memmove-vec-unaligned-erms.S",
         "__memcpy_avx_unaligned_erms [/usr/lib/x86_64-linux-gnu/libc.so.6]", "libc memcpy"),
        ("./nptl/./nptl/pthread_mutex_lock.c", "pthread_mutex_lock", "libc other"),
        ("/tmp/ci-clone/src/proxy/h2/mod.rs", "spoke::proxy::h2::H2World::poll_task", "spoke"),
        ("???", "0x0000000000123456", "other"),
    ]
    for path, func, want in cases:
        got = owner(path, func)
        assert got == want, (path, func, got, want)
    print("selftest: ok")


def main():
    if sys.argv[1:] == ["selftest"]:
        selftest()
        return
    n1, f1, n2, f2 = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    a, b = self_costs(f1), self_costs(f2)
    per = {k: (b[k] - a[k]) / (n2 - n1) for k in set(a) | set(b)}
    total = sum(per.values())
    rest, folded = 0.0, 0
    for k, v in sorted(per.items(), key=lambda kv: -kv[1]):
        if v >= total / 200:
            print(f"  {v:9,.0f}  {100 * v / total:5.1f} %  {k}")
        else:
            rest, folded = rest + v, folded + 1
    if folded:
        print(f"  {rest:9,.0f}  {100 * rest / total:5.1f} %  ({folded} owners under 0.5 % each)")
    print(f"  {total:9,.0f}  total")


if __name__ == "__main__":
    main()
