"""The import graph of `src/rakuten_mlops`: no circle, and no import from a lower layer to a
higher one (the layer order is stated in docs/development.md).

Every import counts, those inside functions included: a deferred import hides a circle from
Python, not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "rakuten_mlops"

# Bottom to top: a package may import its own modules and any package of a lower layer.
# The root package (`rakuten_mlops`, its __version__) is below everything.
LAYERS: list[set[str]] = [
    {"schema", "errors"},
    {"config", "params", "secret_rules"},
    {"features", "db"},
    {"data"},
    {"tracking"},
    {"models", "registry"},
    {"evaluation", "inference"},
    {"monitoring", "scoring", "simulation"},
    {"training"},
    {"serving"},
    {"cli"},
]


def _module_name(path: Path) -> str:
    parts = ("rakuten_mlops", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports (anywhere in its body)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rakuten_mlops"):
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    targets.add(candidate if candidate in modules else str(node.module))
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("rakuten_mlops")}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rakuten_mlops"


def _layer(package: str) -> int:
    if package == "rakuten_mlops":
        return -1
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_package_has_a_layer() -> None:
    packages = {_package(m) for m in import_graph()} - {"rakuten_mlops"}
    assert packages == set().union(*LAYERS)


def test_no_circle_of_imports() -> None:
    assert find_cycle(import_graph()) is None


def test_the_checker_sees_a_circle_hidden_in_a_function() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_runs_up_the_layers() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if _layer(_package(target)) > _layer(_package(module))
    )
    assert upward == []


# Inside `serving`: the API's routes and the console's pages both call the service layer
# (`serving.services`) and never import each other. Only the app (which mounts both) and the
# pre-auth check of a console session cookie reach into them from elsewhere in `serving`.
SERVING_FRONTS = ("rakuten_mlops.serving.api", "rakuten_mlops.serving.console")


def _front(module: str) -> str | None:
    return next((f for f in SERVING_FRONTS if module == f or module.startswith(f + ".")), None)


def test_api_and_console_meet_only_in_the_service_layer() -> None:
    graph = import_graph()
    crossing = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module.startswith("rakuten_mlops.serving.")
        for target in targets
        if _front(target) is not None
        and _front(module) != _front(target)
        and module not in {"rakuten_mlops.serving.app", "rakuten_mlops.serving.auth.preauth"}
    )
    assert crossing == []
    services = [m for m in graph if m.startswith("rakuten_mlops.serving.services.")]
    assert {m.rsplit(".", 1)[1] for m in services} >= {"classify", "review", "models", "users"}
