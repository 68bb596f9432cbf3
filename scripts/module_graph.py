#!/usr/bin/env python3
"""Checks that the modules of each crate import one another in one direction (no cycle).

For every `.rs` file under `<crate>/src` (test modules and comments left out), each `crate::…`
path (brace groups expanded) is resolved to the module it names, or, for an item re-exported at
the crate root, to the module that defines it; a submodule using its parent is not an edge. Prints
each crate's modules and edges and exits 1 when a cycle exists, naming it.

    python3 scripts/module_graph.py . crates/*
"""
import os
import re
import sys


def module_name(root, path):
    parts = os.path.relpath(path, root)[:-3].split("/")
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts)


def expand(path):
    """`a::{b, c::{d, e}}` → [`a::b`, `a::c::d`, `a::c::e`]."""
    m = re.match(r"^([A-Za-z0-9_:]*?)\{(.*)\}$", path.strip(), re.S)
    if not m:
        return [path.strip()]
    prefix, inner = m.groups()
    items, depth, current = [], 0, ""
    for ch in inner:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    return [prefix + e for item in items if item.strip() for e in expand(item)]


def crate_paths(source):
    paths = []
    for m in re.finditer(r"crate::(\{[^;]*\}|[A-Za-z0-9_:]+)", source):
        paths += expand(m.group(1)) if m.group(1).startswith("{") else [m.group(1)]
    return [p.split(" as ")[0].strip() for p in paths]


def check(crate):
    root = os.path.join(crate, "src")
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".rs")]
    modules = {module_name(root, f): f for f in files}
    defined = {}
    for module, path in modules.items():
        pattern = r"^\s*pub(?:\([a-z]+\))? (?:struct|enum|trait|fn|type|const|static) (\w+)"
        for name in re.findall(pattern, open(path).read(), re.M):
            defined.setdefault(name, module)
    edges = {m: set() for m in modules}
    for module, path in modules.items():
        source = re.split(r"#\[cfg\(test\)\]\s*mod tests", open(path).read())[0]
        source = re.sub(r"//[^\n]*", "", source)
        for p in crate_paths(source):
            parts = [x for x in p.split("::") if x]
            target = next(
                ("::".join(parts[:k]) for k in range(len(parts), 0, -1) if "::".join(parts[:k]) in modules),
                None,
            )
            if target is None and parts:
                target = defined.get(parts[-1] if len(parts) == 1 else parts[0])
            if target and target != module and not module.startswith(target + "::"):
                edges[module].add(target)
    state, cycles = {}, []

    def visit(u, stack):
        state[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif not state.get(v):
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for m in sorted(modules):
        if not state.get(m):
            visit(m, [])
    count = sum(len(e) for e in edges.values())
    print(f"{crate}: {len(modules)} modules, {count} imports between them, ", end="")
    print("cycles: " + "; ".join(" → ".join(c) for c in cycles) if cycles else "no cycle")
    return not cycles


if __name__ == "__main__":
    crates = [c for c in sys.argv[1:] if os.path.isdir(os.path.join(c, "src"))] or ["."]
    sys.exit(0 if all([check(c) for c in crates]) else 1)
