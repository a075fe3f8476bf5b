"""The shape of the code base, kept true by a test: short functions and no import cycles.

A newcomer should find each stage in one step and read any function on one screen, so
no function in ``train/`` is longer than 60 lines, and none anywhere in ``src/`` longer
than 80 (a nested function counts apart from the one around it). Import cycles make the
order of imports matter and hide which layer owns what; every import counts here, the
lazy ones inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "inspectnet"
LIMIT = 80
LIMIT_TRAIN = 60


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def function_lengths(path: Path) -> list[tuple[str, int]]:
    """``(qualified name, lines)`` of every function in a file, nested functions apart."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                span = child.end_lineno - child.lineno + 1  # type: ignore[operator]
                nested = [n for n in ast.walk(child) if n is not child
                          and isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
                # Only the outermost nested definitions: their own children are inside them.
                outer = [n for n in nested if not any(m is not n and m.lineno <= n.lineno
                                                      and n.end_lineno <= m.end_lineno for m in nested)]
                span -= sum(n.end_lineno - n.lineno + 1 for n in outer)  # type: ignore[operator]
                out.append((name, span))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``: they never run."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def import_graph() -> dict[str, set[str]]:
    """Module -> the inspectnet modules it imports (explicit edges, lazy imports included;
    imports for type checkers only are not edges)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        here = mod.split(".") if is_pkg else mod.split(".")[:-1]
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    base_name = ".".join(base + ([node.module] if node.module else []))
                else:
                    base_name = node.module or ""
                # ``from pkg import sub`` imports the submodule when there is one.
                subs = [f"{base_name}.{a.name}" for a in node.names if f"{base_name}.{a.name}" in mods]
                targets = subs if subs and len(subs) == len(node.names) else [base_name] + subs
            for t in targets:
                if t in mods and t != mod:
                    graph[mod].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_function_is_longer_than_the_limits():
    too_long = []
    for mod, path in _modules().items():
        limit = LIMIT_TRAIN if mod.startswith("inspectnet.train") else LIMIT
        too_long += [f"{path.relative_to(SRC)}:{name} ({n} lines > {limit})"
                     for name, n in function_lengths(path) if n > limit]
    assert not too_long, "split these functions:\n" + "\n".join(too_long)


def test_the_package_has_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_checks_can_fail(tmp_path):
    # The two checks above must see what they are meant to see.
    f = tmp_path / "m.py"
    f.write_text("def outer():\n" + "    x = 1\n" * 5 + "    def inner():\n" + "        y = 2\n" * 10 + "    return x\n")
    assert dict(function_lengths(f)) == {"outer": 7, "outer.inner": 11}
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    graph = import_graph()
    assert "inspectnet.evaluate.report" in graph["inspectnet.train.finish"]  # imported inside a function
    assert "inspectnet.config" not in graph["inspectnet.train.approach"]  # under TYPE_CHECKING
