#!/usr/bin/env python3
"""Self (exclusive) instruction counts per function from a callgrind output file.

usage: callgrind_self.py CALLGRIND_OUT [TOP]
Also prints how often the allocator entry points were called.
callgrind_annotate 3.19 attributes all self cost of a multi-threaded tokio program to
`clone` here; this reads the file format directly: cost lines count for the current
`fn=`, except the line right after a `calls=` line (that one is the callee's inclusive
cost). Only the first event (Ir) is used.
"""
import re
import sys
from collections import defaultdict

COST = re.compile(r"^[0-9+\-*]")


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    names = {}
    self_cost = defaultdict(int)
    total = 0
    calls = defaultdict(int)
    fn = None
    cfn = None
    skip_next = False
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
                if m:
                    if m.group(2) is not None:
                        names[m.group(1)] = m.group(2)
                    fn = names.get(m.group(1), m.group(1))
                else:
                    fn = line[3:].rstrip("\n")
                continue
            if line.startswith(("cfn=", "cfi=", "cfl=", "cob=")):
                m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
                if m:
                    if m.group(2) is not None:
                        names[m.group(1)] = m.group(2)
                    cfn = names.get(m.group(1), m.group(1))
                continue
            if line.startswith("calls="):
                calls[cfn] += int(line[6:].split()[0])
                skip_next = True
                continue
            if COST.match(line):
                parts = line.split()
                if len(parts) < 2:
                    continue
                if skip_next:
                    skip_next = False
                    continue
                c = int(parts[1])
                self_cost[fn] += c
                total += c
    print(f"total self Ir: {total:,}")
    for name, c in sorted(self_cost.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{c:>14,} ({100.0 * c / total:5.2f}%)  {name}")
    print("calls to allocator entry points:")
    for name in ("malloc", "free", "realloc", "calloc", "__rustc::__rust_alloc", "__rustc::__rust_dealloc",
                 "__rustc::__rust_realloc"):
        print(f"{calls.get(name, 0):>14,}  {name}")


if __name__ == "__main__":
    main()
