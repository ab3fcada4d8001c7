#!/usr/bin/env python3
"""The layer check of ARCHITECTURE.md: which top-level modules of multiproc/src name
which others (in code, not doc comments), and whether any two folders name each other
or any cycle runs through several. Exits 1 on a cycle, or if `sys` or `ring` name a
module above them. `-v` prints the lines behind each edge."""
import collections
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "multiproc", "src")
# What the ground floor may name: nothing but itself (sys), the codec and sys (ring).
ALLOWED = {"sys": set(), "ring": {"codec", "sys"}}

tops = set()
for e in os.listdir(ROOT):
    if e.endswith(".rs") and e != "lib.rs":
        tops.add(e[:-3])
    elif os.path.isdir(os.path.join(ROOT, e)):
        tops.add(e)

edges = collections.defaultdict(lambda: collections.defaultdict(list))
for dirpath, _, files in os.walk(ROOT):
    for f in files:
        if not f.endswith(".rs"):
            continue
        path = os.path.join(dirpath, f)
        unit = os.path.relpath(path, ROOT).split(os.sep)[0].removesuffix(".rs")
        if unit == "lib":
            continue
        for i, line in enumerate(open(path, encoding="utf-8"), 1):
            code = line.split("//")[0]
            for m in re.finditer(r"crate::(\{[^}]*\}|[A-Za-z_]+)", code):
                g = m.group(1)
                names = [x.strip().split("::")[0] for x in g.strip("{}").split(",")] if g.startswith("{") else [g]
                for n in names:
                    if n and n not in (unit, "self"):
                        target = n if n in tops else "<root re-export " + n + ">"
                        edges[unit][target].append(f"{os.path.relpath(path, ROOT)}:{i}")

graph = {u: {t for t in edges[u] if t in tops} for u in edges}


def reach(start):
    seen, todo = set(), [start]
    while todo:
        for y in graph.get(todo.pop(), ()):
            if y not in seen:
                seen.add(y)
                todo.append(y)
    return seen


problems = []
for u in sorted(edges):
    print(u, "->", ", ".join(sorted(edges[u])))
    for t in sorted(edges[u]):
        bad = t.startswith("<root") or (t in graph and u in reach(t)) or (u in ALLOWED and t not in ALLOWED[u])
        if bad:
            problems.append(f"{u} -> {t}: {', '.join(edges[u][t][:3])}")
        if "-v" in sys.argv[1:]:
            print("   ", t, edges[u][t][:4])
if problems:
    print("layer check failed (a cycle, a root re-export used inside the crate, or the ground floor calling up):")
    print("\n".join("  " + p for p in problems))
    sys.exit(1)
print("layer check: no cycle between folders; sys and ring name nothing above them")
