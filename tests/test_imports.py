"""The project's modules import one another without cycles (imports inside functions included;
those under ``if TYPE_CHECKING:`` left out: they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()
"""Edges left out of the check while a cycle they close is being removed; empty: the whole graph."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    paths = [*ROOT.glob("landmark/**/*.py"), *ROOT.glob("workers/*.py")]
    return {module_name(path): path for path in paths}


def imports(name: str, path: Path, modules: set[str], *, typing: bool = False) -> set[str]:
    """The project modules ``name`` imports anywhere in its file, as written (an import of a
    package's member that is itself a module counts as an import of that module); with
    ``typing``, those for type checkers too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If) and _type_checking(node.test)
                   for statement in node.body for inner in ast.walk(statement)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only and not typing:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    return {m for m in found if m in modules and m != name}


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph(*, typing: bool = False) -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports(name, path, set(modules), typing=typing) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected set of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_as_written() -> None:
    graph = import_graph()
    assert "landmark.jobs.table" in graph["landmark.jobs.steps"]  # from .table import Jobs
    assert "landmark.schema" in graph["landmark.store"]
    assert "landmark.kube" in graph["landmark.clusters"]  # an import inside a function
    assert "workers.app" in graph["workers.tasks"]
    assert "landmark.matching" not in graph["landmark.verification"]  # for type checkers only
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    graph = import_graph()
    for source, target in KNOWN_CYCLE_EDGES:
        graph[source].discard(target)
    assert cycles(graph) == []


def test_the_library_does_not_import_the_queue() -> None:
    """Jobs are given their sender; only the front ends (CLI, API) know the queue's module, so
    ``workers`` can import the jobs package and not the other way round, even for type checkers."""
    graph = import_graph(typing=True)
    reach = {name for name in graph if name.startswith("landmark.jobs")}
    frontier = set(reach)
    while frontier:
        frontier = {target for name in frontier for target in graph[name]} - reach
        reach |= frontier
    assert not {name for name in reach if name.startswith("workers")}
