#!/usr/bin/env python3
"""Prints which modules of each crate import which, and any import cycle.

    python3 scripts/module_cycles.py            # every crate; exit 1 if a cycle exists

A module is a file (`a/b.rs` is `a::b`, `a/mod.rs` is `a`); its imports are the
`crate::a::b` and `super::x` paths in it, resolved to the deepest module that exists. Tests
(`#[cfg(test)]` blocks at the end of a file) and comments are left out, and so are edges
between a module and its own ancestors (a parent re-exporting its children is not a cycle).
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = ["state", "vector", "sql", "replication", "server", "client", "examples"]


def module_of(src: pathlib.Path, f: pathlib.Path) -> str:
    parts = list(f.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts)


def resolve(path: str, modules: set) -> str:
    parts = path.split("::")
    for n in range(len(parts), 0, -1):
        cand = "::".join(parts[:n])
        if cand in modules:
            return cand
    return ""


def related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "::") or b.startswith(a + "::") or not a or not b


def code_of(f: pathlib.Path) -> str:
    text = f.read_text()
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    return "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))


def sccs(graph):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


cycles = 0
for crate in CRATES:
    src = ROOT / crate / "src"
    if not src.exists():
        continue
    files = [f for f in sorted(src.rglob("*.rs")) if "bin" not in f.relative_to(src).parts]
    modules = {module_of(src, f) for f in files}
    graph = {}
    for f in files:
        m = module_of(src, f)
        if not m:
            continue
        code = code_of(f)
        refs = re.findall(r"crate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", code)
        parent = m.rsplit("::", 1)[0] if "::" in m and not f.name == "mod.rs" else m
        if f.name != "mod.rs" and "::" not in m:
            parent = ""
        refs += [f"{parent}::{r}" if parent else r for r in re.findall(r"super::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", code)]
        deps = {resolve(r, modules) for r in refs}
        graph.setdefault(m, set()).update(d for d in deps if not related(m, d))
    print(f"{crate}:")
    for m in sorted(graph):
        print(f"  {m} -> {', '.join(sorted(graph[m])) or '(nothing)'}")
    for comp in sccs(graph):
        if len(comp) > 1:
            cycles += 1
            print(f"  CYCLE: {' <-> '.join(sorted(comp))}")
sys.exit(1 if cycles else 0)
