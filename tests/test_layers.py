"""The house's rules, checked by tools rather than by review.

* import-linter's contracts in ``pyproject.toml`` (layers, kernels, model, figures, dashboard,
  report) hold: ``lint-imports`` exits 0;
* no import cycle inside ``kvmpt`` (every import statement, lazy ones too);
* no module over 400 lines.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "kvmpt"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(ROOT).with_suffix("")
        if rel.parts[1] in ("data", "notebooks"):
            continue
        name = ".".join(rel.parts)
        mods[name.removesuffix(".__init__")] = f
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the kvmpt modules it imports (a package's ``__init__`` importing its own
    children, or a module importing its ancestor package, is not an edge)."""
    edges: dict[str, set[str]] = {}
    for cur, f in mods.items():
        base = cur.split(".") if f.name == "__init__.py" else cur.split(".")[:-1]
        out: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                b = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                m = ".".join(b + ([node.module] if node.module else [])) if node.level else node.module
                names = [m] + [f"{m}.{a.name}" for a in node.names]
            for m in names:
                while m and m not in mods:
                    m = m.rpartition(".")[0]
                if m and m != cur and not cur.startswith(m + ".") and not (
                        f.name == "__init__.py" and m.startswith(cur + ".")):
                    out.add(m)
        edges[cur] = out
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root), on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w), on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert _cycles(_imports(_modules())) == []


def test_no_module_over_400_lines():
    long = {m: n for m, f in _modules().items() if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_import_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent) + os.pathsep
                       + os.environ.get("PATH", ""))
    assert exe, "lint-imports (import-linter, a dev dependency) is not installed"
    res = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout
