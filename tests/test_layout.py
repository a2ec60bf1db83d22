"""The package's shape: one folder per layer, nothing at the top beyond the entry points, no import cycle."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "adn"
TOP_LEVEL = {"__init__.py", "__main__.py", "errors.py"}  # docs/contributing.md says why these stay at the top


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def _imports(modules: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    """Module -> the adn modules it imports anywhere in its body (function-level imports count: a lazy import is
    still a cycle a reader has to untangle). The package root is left out: it only re-exports."""

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, package) in modules.items():
        base = name.split(".") if package else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                prefix = base[: len(base) - node.level + 1] if node.level else []
                target = ".".join(prefix + ([node.module] if node.module else []))
                # ``from . import x`` imports module x; ``from .m import name`` imports module m
                edges.update(owner(f"{target}.{a.name}") for a in node.names)
            elif isinstance(node, ast.Import):
                edges.update(owner(a.name) for a in node.names)
        graph[name] = {e for e in edges if e and e != name and e != "adn"}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_top_level_holds_only_entry_points_and_layers():
    assert {p.name for p in SRC.glob("*.py")} == TOP_LEVEL
    layers = {p.name for p in SRC.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert {"core", "models", "training", "evaluation", "deploy", "runtime", "data", "cli"} <= layers


def test_no_import_cycle():
    graph = _imports(_modules())
    assert graph["adn.deploy.switchable"] >= {"adn.core.network"}  # the checker sees imports at all
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]  # and finds a cycle when there is one
    assert _cycles(graph) == []


def test_core_imports_no_layer_above_it():
    graph = _imports(_modules())
    above = ("adn.models", "adn.training", "adn.evaluation", "adn.deploy", "adn.cli", "adn.detection")
    upward = {m: sorted(t for t in ts if t.startswith(above)) for m, ts in graph.items() if m.startswith("adn.core")}
    assert {m: ts for m, ts in upward.items() if ts} == {}
