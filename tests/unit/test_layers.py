"""The package's dependency direction, no cycles.

config <- domain <- query <- platforms <- outputs <- runtime <- tools.

Read from the source (every ``import`` and ``from ... import``, including the ones inside
functions), so a lazy import cannot hide a cycle. The layers are the target design of
docs/architecture.md ("Layers"); a module not listed here fails the test, so every new
module is placed on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "stream"

#: Lowest first, each layer its own subpackage(s). A module may import modules of its own
#: layer or below, never above.
LAYERS: dict[str, tuple[str, ...]] = {
    # configuration and time: read by every layer
    "config": ("stream.config",),
    # typed events and records, the partition state, the pure pipeline, KPI math, statistics
    "domain": ("stream.domain",),
    # windows over buckets; the whole contact center from partition views
    "query": ("stream.query",),
    # what leaves a worker: Prometheus, Redis (alerts, views), the wallboard reading Redis
    "outputs": ("stream.outputs", "stream.alerting", "stream.wallboard"),
    # everything that knows Faust and Kafka
    "runtime": ("stream.runtime",),
    # the command line and the tools around the worker
    "tools": (
        "stream",
        "stream.__main__",
        "stream.cli",
        "stream.tools",
        "stream.generator",
        "stream.embedded",
        "stream.ingest",
    ),
}
#: The only modules directly in ``stream/``: the package, ``python -m stream`` and the CLI.
TOP_LEVEL = {"stream", "stream.__main__", "stream.cli"}
ORDER = list(LAYERS)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """The layer of a module: its own entry, or its package's (``stream.alerting.rules``)."""
    best = None
    for layer, names in LAYERS.items():
        for name in names:
            if (module == name or module.startswith(name + ".")) and (
                best is None or len(name) > len(best[1])
            ):
                best = (layer, name)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")
    return best[0]


def imports() -> dict[str, set[str]]:
    """Module -> the ``stream`` modules it imports anywhere in its source."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for candidate in [node.module, *(f"{node.module}.{a.name}" for a in node.names)]:
                    if candidate in modules:
                        targets.add(candidate)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in modules}
        # "from stream import kpi" names the package too: only the module counts.
        targets.discard("stream")
        targets.discard(name)
        graph[name] = targets
    return graph


def test_every_module_has_a_layer() -> None:
    for module in imports():
        layer_of(module)


def test_every_module_lives_in_its_layers_subpackage() -> None:
    loose = sorted(m for m in imports() if m.count(".") == 1 and m not in TOP_LEVEL)
    packages = {m for m in imports() if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
    assert not [m for m in loose if m not in packages], f"modules outside a layer's subpackage: {loose}"


def test_imports_only_point_down() -> None:
    wrong = []
    for module, targets in sorted(imports().items()):
        mine = ORDER.index(layer_of(module))
        for target in sorted(targets):
            if ORDER.index(layer_of(target)) > mine:
                wrong.append(f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})")
    assert not wrong, "imports against the layer order:\n  " + "\n  ".join(wrong)


def test_no_import_cycles() -> None:
    graph = imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("layer", ["domain", "query", "platforms"])
def test_domain_and_query_know_no_faust_and_no_io(layer: str) -> None:
    banned = ("faust", "aiokafka", "redis", "aiohttp", "prometheus_client")
    for path in PACKAGE.rglob("*.py"):
        module = module_name(path)
        if layer_of(module) != layer:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                assert name.split(".")[0] not in banned, f"{module} ({layer}) imports {name}"
