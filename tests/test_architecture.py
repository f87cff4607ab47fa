"""The packages' import graph: no module imports, directly or through others, a module that imports it
back, counting imports inside functions (a function-local import only hides a circle until the
function runs). Read with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str, root: Path = REPO) -> dict[str, set[str]]:
    """Module → the package's modules it imports anywhere in its body (``from . import a`` counts as
    importing ``a``, not the package). ``package`` is a folder of ``root``."""
    files = {_module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in files)
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here.split(".")[: len(here.split(".")) - node.level + 1]) if node.level else ""
                target = ".".join(filter(None, [base, node.module or ""]))
                subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in files}
                deps.update(subs)
                if len(subs) < len(node.names) and target in files:
                    deps.add(target)
        deps.discard(name)
        graph[name] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_function_local_circle(tmp_path):
    """The check itself can fail: two modules importing each other, one of them inside a function."""
    pkg = tmp_path / "p"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n    return a\n")
    (pkg / "c.py").write_text("from . import a\n")
    graph = import_graph("p", tmp_path)
    assert graph == {"p": set(), "p.sub": set(), "p.a": {"p.sub.b"}, "p.sub.b": {"p.a"}, "p.c": {"p.a"}}
    assert circles(graph) == [["p.a", "p.sub.b"]]
    assert circles({"p.a": {"p.b"}, "p.b": set()}) == []


@pytest.mark.parametrize("package", ["rsd_engine", "workbench"])
def test_no_import_circle(package):
    graph = import_graph(package)
    assert len(graph) > 5 and any(graph.values())  # the graph was read
    assert circles(graph) == [], "modules that import each other (directly or through others)"
