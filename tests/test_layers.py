"""The package graph: layers import only downward, nothing cycles, Gradio stays in the UI.

Every import counts, lazy (inside a function) and ``TYPE_CHECKING`` ones included: a cycle hidden by a
lazy import is still a cycle for a reader. Layers, bottom to top::

    guidance < condition < models < pipelines < reporting < experiments < tasks < ui < app

``pipelines`` samples, ``reporting`` presents (plots, tables, metadata), ``experiments`` measure; ``testing`` builds
fixtures (tiny models, the hub replica) and, like ``scripts`` and ``tests``, may import anything while nothing in the
app imports it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("guidance", "condition", "models", "pipelines", "reporting", "experiments", "tasks", "ui", "app")
GRADIO_ALLOWED = {"ui", "app"}
TOOLS = {"scripts", "tests", "testing"}  # may import anything; the app imports none of them


def imported_modules(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file (top level, functions, TYPE_CHECKING blocks)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def package_of(path: Path, root: Path) -> str:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def package_graph(root: Path, packages: set[str]) -> dict[str, dict[str, set[str]]]:
    """package → imported package → the files that import it."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in root.rglob("*.py"):
        if {".venv", ".git"} & set(path.relative_to(root).parts):
            continue
        source = package_of(path, root)
        for module in imported_modules(path):
            target = module.split(".")[0]
            if target in packages and target != source:
                graph[source][target].add(str(path.relative_to(root)))
    return graph


def find_cycle(graph: dict[str, dict[str, set[str]]]) -> list[str] | None:
    """One cycle between packages (as a path a → b → … → a), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, {}):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in list(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def layer_violations(graph: dict[str, dict[str, set[str]]], layers: tuple[str, ...]) -> list[str]:
    rank = {name: i for i, name in enumerate(layers)}
    bad = []
    for source, targets in graph.items():
        for target, files in targets.items():
            if target in TOOLS and source not in TOOLS:
                bad.append(f"{source} imports the tool package {target} ({sorted(files)[0]})")
            elif source in rank and target in rank and rank[target] >= rank[source]:
                bad.append(f"{source} → {target} goes up or sideways ({sorted(files)[0]})")
    return bad


def project_packages(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()} | {"app"}


def test_no_cycles_and_imports_go_down_the_layers():
    graph = package_graph(ROOT, project_packages(ROOT))
    assert find_cycle(graph) is None, find_cycle(graph)
    assert not layer_violations(graph, LAYERS), layer_violations(graph, LAYERS)
    assert not graph.get("guidance"), f"guidance imports project packages: {dict(graph.get('guidance', {}))}"


def test_only_the_ui_imports_gradio():
    offenders = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if {".venv", ".git"} & set(rel.parts) or package_of(path, ROOT) in GRADIO_ALLOWED | TOOLS:
            continue
        if any(m == "gradio" or m.startswith("gradio.") for m in imported_modules(path)):
            offenders.append(str(rel))
    assert not offenders, offenders


def test_the_checks_catch_a_lazy_cycle_and_an_upward_import(tmp_path):
    """Shown on a tree written for the purpose: a lazy import from models into pipelines closes a cycle."""
    for package in ("guidance", "models", "pipelines"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "pipelines" / "run.py").write_text("from models.loading import load\n")
    (tmp_path / "models" / "loading.py").write_text("def load():\n    from pipelines.run import Thing\n")
    graph = package_graph(tmp_path, project_packages(tmp_path))
    assert find_cycle(graph) in (["models", "pipelines", "models"], ["pipelines", "models", "pipelines"])
    assert layer_violations(graph, LAYERS) == ["models → pipelines goes up or sideways (models/loading.py)"]
    # Without the lazy import the same tree is clean.
    (tmp_path / "models" / "loading.py").write_text("def load():\n    return 1\n")
    graph = package_graph(tmp_path, project_packages(tmp_path))
    assert find_cycle(graph) is None and not layer_violations(graph, LAYERS)
