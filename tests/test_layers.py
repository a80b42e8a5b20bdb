"""The import graph, read from the source (AST): imports point down the layers and no files
import each other in a circle (docs/design.md, "Layers": `interp` <- `saes` <- `circuits`;
`probes` uses `interp` and may use `saes`; the CLI and the demo reach upper layers through
import strings).

Every import counts, also one inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER = {"interp": 0, "saes": 1, "probes": 1, "circuits": 2}
ALLOWED_SIDEWAYS = {("probes", "saes")}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in LAYER:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `module` imports (the deepest known module of each name)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod
            names += [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                      for a in node.names]
    out = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {m: _imports(m, p, known) for m, p in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
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
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    bad = []
    for src, targets in graph.items():
        a = src.split(".")[0]
        for dst in targets:
            b = dst.split(".")[0]
            if a != b and LAYER[b] >= LAYER[a] and (a, b) not in ALLOWED_SIDEWAYS:
                bad.append((src, dst))
    return sorted(bad)


def test_imports_point_down_the_layers():
    assert upward(_graph()) == []


def test_no_import_circles_between_files():
    assert _cycles(_graph()) == []


def test_the_checks_catch_what_they_look_for():
    """The two checks on a made-up graph: an upward edge and a circle are reported."""
    g = {"interp.a": {"saes.b"}, "saes.b": {"saes.c"}, "saes.c": {"saes.b"}, "probes.d": {"saes.b"}}
    assert upward(g) == [("interp.a", "saes.b")]
    assert _cycles(g) == [["saes.b", "saes.c"]]
