"""The floor plan (docs/architecture.md), kept by reading every module's imports.

Floors, bottom to top: data -> retrieval, features -> ranking -> serving -> search. A module may import its
own package and any package on a lower floor; retrieval and features share a floor and import neither each
other. Every import counts, including those inside functions and under ``TYPE_CHECKING``: an import that runs
up is a design bug wherever it hides. Module-level imports (type-only ones included) must also form no loop.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"data": 0, "retrieval": 1, "features": 1, "ranking": 2, "serving": 3, "search": 4}
MAX_CODE_LINES = 450


def _modules() -> dict[str, Path]:
    found = {}
    for package in FLOORS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imported(module: str, path: Path, node: ast.AST) -> list[str]:
    """Absolute names an import statement refers to (``from a import b`` gives ``a`` and ``a.b``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = _package_of(module, path).split(".")
            base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
        return [base] + [f"{base}.{alias.name}" for alias in node.names]
    return []


def _own(name: str) -> str | None:
    """The project module a dotted name lies in (longest known prefix), or None for third-party names."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _module_level_imports(body: list[ast.stmt]) -> list[ast.stmt]:
    """Imports that run (or are type-checked) when the module loads: top level, inside if/try blocks."""
    found: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If | ast.Try):
            found += _module_level_imports(node.body) + _module_level_imports(node.orelse)
    return found


def test_no_import_runs_up() -> None:
    upward = []
    for module, path in MODULES.items():
        floor, top = FLOORS[module.split(".")[0]], module.split(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for name in _imported(module, path, node):
                target = name.split(".")[0]
                if target not in FLOORS or target == top:
                    continue
                if FLOORS[target] >= floor:
                    upward.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not upward, "imports that run up or across a floor:\n" + "\n".join(sorted(set(upward)))


def test_no_module_level_import_loops() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for node in _module_level_imports(ast.parse(path.read_text(), str(path)).body):
            for name in _imported(module, path, node):
                target = _own(name)
                if target and target != module:
                    graph[module].add(target)
    loops = _strongly_connected(graph)
    assert not loops, "module-level import loops: " + "; ".join(" <-> ".join(sorted(c)) for c in loops)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module are loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []
    for root in list(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    loops.append(component)
    return loops


def _code_lines(path: Path) -> int:
    """Lines neither blank nor only a comment (docstrings count: they are part of the module)."""
    stripped = (line.strip() for line in path.read_text().splitlines())
    return sum(1 for line in stripped if line and not line.startswith("#"))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module: str) -> None:
    lines = _code_lines(MODULES[module])
    assert lines <= MAX_CODE_LINES, f"{module}: {lines} lines of code (most {MAX_CODE_LINES}); split it"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The walker finds an upward import inside a function and a loop through a type-only import."""
    source = "def f():\n    from search.settings import Settings\n"
    names = [n for node in ast.walk(ast.parse(source)) for n in _imported("data.x", ROOT / "data/x.py", node)]
    assert "search.settings" in names
    assert _strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["b", "a"]]
