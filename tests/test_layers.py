"""The layers point one way: the import graph of bench/, models/ and data/, read from the
source, has no cycle, between modules or between packages (bench/'s subpackages, models/,
data/), and the models do not reach up into the cost layer.

Every import counts: at module level, inside functions and under ``TYPE_CHECKING``, absolute
and relative, resolved to the project module it names (``from a import b`` names ``a.b``
where that is a module, else ``a``). Only the registry's import strings are not edges: they
are how bench/ reaches models/ lazily."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "models", "data")
#: Layers a module under models/ or data/ must not import: analysis prices and compares
#: finished runs, the CLI and fleets sit on top of everything.
ABOVE_THE_MODELS = (
    "bench.analysis",
    "bench.cli",
    "bench.commands",
    "bench.fleet",
    "bench.datasets",
)

Graph = dict[str, dict[str, int]]


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _project_modules(root: Path) -> dict[str, Path]:
    return {
        _module_name(p, root): p for top in PACKAGES for p in sorted((root / top).rglob("*.py"))
    }


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` loads: itself, or the nearest package above it."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(module: str, path: Path) -> list[tuple[str, int]]:
    names: list[tuple[str, int]] = []
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            names.append((source, node.lineno))
            names.extend((f"{source}.{alias.name}", node.lineno) for alias in node.names)
    return names


def import_graph(root: Path = ROOT) -> Graph:
    """module -> {imported project module: first line that imports it}."""
    modules = _project_modules(root)
    graph: Graph = {m: {} for m in modules}
    for module, path in modules.items():
        for name, line in _imported_names(module, path):
            target = _resolve(name, modules)
            if target is not None and target != module:
                graph[module].setdefault(target, line)
    return graph


def groups(graph: Graph) -> list[set[str]]:
    """The strongly connected groups of more than one node (Tarjan): each is one or more
    cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle through each strongly connected group, as a path that ends where it
    starts."""
    return [_cycle_in(graph, group) for group in groups(graph)]


def _cycle_in(graph: Graph, group: set[str]) -> list[str]:
    start = min(group)
    path, seen = [start], {start}
    while True:
        here = path[-1]
        step = sorted(w for w in graph[here] if w in group)
        back = [w for w in step if w in seen]
        if back:
            return [*path[path.index(back[0]) :], back[0]]
        path.append(step[0])
        seen.add(step[0])


def _show(graph: Graph, cycle: list[str]) -> str:
    return (
        " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False))
        + f" -> {cycle[-1]}"
    )


def _report(graph: Graph) -> list[str]:
    """Each group's cycle, and the group's other members where the cycle misses some."""
    lines = []
    for group in groups(graph):
        cycle = _cycle_in(graph, group)
        lines.append(_show(graph, cycle))
        if rest := sorted(group - set(cycle)):
            lines.append(f"    in the same knot: {', '.join(rest)}")
    return lines


def test_the_import_graph_has_no_cycle():
    found = _report(import_graph())
    assert found == [], "import cycles:\n" + "\n".join(found)


def package_graph(graph: Graph) -> Graph:
    """The graph between packages: bench/'s subpackages (each module at bench/'s root on its
    own), models/ and data/."""
    packages = {m.rpartition(".")[0] for m in graph}

    def package(module: str) -> str:
        parts = module.split(".")
        if parts[0] != "bench":
            return parts[0]
        return ".".join(parts[:2]) if ".".join(parts[:2]) in packages else module

    result: Graph = {}
    for module, targets in graph.items():
        edges = result.setdefault(package(module), {})
        for target, line in targets.items():
            if package(target) != package(module):
                edges.setdefault(package(target), line)
    for edges in list(result.values()):
        for target in edges:
            result.setdefault(target, {})
    return result


def test_the_packages_have_no_cycle():
    """The schema (bench.schema) at the ground; run, telemetry and analysis above it; the
    CLI on top. A cycle between packages, even of acyclic modules, is an arrow back up."""
    graph = package_graph(import_graph())
    found = _report(graph)
    assert found == [], "package cycles:\n" + "\n".join(found)
    assert graph["bench.schema"] == {}


def test_the_models_and_data_do_not_import_the_layers_above_them():
    graph = import_graph()
    upward = sorted(
        f"{module} (line {line}) -> {target}"
        for module, targets in graph.items()
        if module.split(".")[0] in ("models", "data")
        for target, line in targets.items()
        if target.startswith(ABOVE_THE_MODELS)
    )
    assert upward == []


def _graph_of(tmp_path: Path, files: dict[str, str]) -> Graph:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return import_graph(tmp_path)


def test_the_graph_sees_lazy_type_checking_and_relative_imports(tmp_path):
    graph = _graph_of(
        tmp_path,
        {
            "bench/__init__.py": "",
            "bench/run/__init__.py": "",
            "bench/run/a.py": "from .b import x\n",
            "bench/run/b.py": "def f():\n    import bench.run.c\n",
            "bench/run/c.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bench.run import a\n"
            ),
            "models/__init__.py": "",
            "models/m.py": "import numpy\nfrom bench.run.a import thing\n",
            "data/__init__.py": "",
        },
    )
    assert graph["bench.run.a"] == {"bench.run.b": 1}
    assert graph["bench.run.b"] == {"bench.run.c": 2}
    assert graph["bench.run.c"] == {"bench.run": 3, "bench.run.a": 3}
    assert graph["models.m"] == {"bench.run.a": 2}
    assert cycles(graph) == [["bench.run.a", "bench.run.b", "bench.run.c", "bench.run.a"]]
    assert _show(graph, cycles(graph)[0]) == (
        "bench.run.a (line 1) -> bench.run.b (line 2) -> bench.run.c (line 3) -> bench.run.a"
    )


def test_an_acyclic_graph_has_no_cycle(tmp_path):
    graph = _graph_of(
        tmp_path,
        {"bench/__init__.py": "", "bench/a.py": "import bench.b\n", "bench/b.py": "import os\n"},
    )
    assert graph == {"bench": {}, "bench.a": {"bench.b": 1}, "bench.b": {}}
    assert cycles(graph) == []


def test_a_cycle_between_packages_of_acyclic_modules_is_found(tmp_path):
    graph = _graph_of(
        tmp_path,
        {
            "bench/__init__.py": "",
            "bench/cli.py": "import bench.run.a\n",
            "bench/run/__init__.py": "",
            "bench/run/a.py": "import bench.telemetry.b\n",
            "bench/run/c.py": "",
            "bench/telemetry/__init__.py": "",
            "bench/telemetry/b.py": "import os\n\nimport bench.run.c\n",
            "models/__init__.py": "",
            "models/m.py": "import bench.run.c\n",
        },
    )
    assert cycles(graph) == []
    packages = package_graph(graph)
    assert packages == {
        "bench": {},
        "bench.cli": {"bench.run": 1},
        "bench.run": {"bench.telemetry": 1},
        "bench.telemetry": {"bench.run": 3},
        "models": {"bench.run": 1},
    }
    assert cycles(packages) == [["bench.run", "bench.telemetry", "bench.run"]]
    assert _report(packages) == ["bench.run (line 1) -> bench.telemetry (line 3) -> bench.run"]
