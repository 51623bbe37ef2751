"""The package's import graph: no cycle anywhere, and the layers import only downwards.

The graph is read from the source (every ``import`` statement, including those inside
functions), so a lazy import that hides a cycle from Python is still caught. The layers are the
module map of README.md ("Code layout").
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "dina_jax"

# Lower layers never import higher ones; a module may import its own layer.
LAYERS = (
    (
        "dina_jax.config",
        "dina_jax.configs",
        "dina_jax.cli",
        "dina_jax.files",
        "dina_jax.losses",
        "dina_jax.plots",
        "dina_jax.progress",
        "dina_jax.tensorboard_writer",
        "dina_jax.data",
    ),
    ("dina_jax.models",),
    ("dina_jax.checkpoint",),
    ("dina_jax.evaluation", "dina_jax.analysis"),
    ("dina_jax.training",),
    ("dina_jax.main",),
)


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(path: pathlib.Path, known: set[str]) -> set[str]:
    """The dina_jax modules a file imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in known
                else node.module
                for alias in node.names
            ]
        else:
            continue
        targets |= {name for name in names if name in known and name != "dina_jax"}
    return targets


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, known) - {name} for name, path in modules.items()}


def _layer(module: str) -> int | None:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_layers_import_only_downwards():
    graph = _graph()
    upward = []
    for module, targets in graph.items():
        source = _layer(module)
        for target in targets:
            layer = _layer(target)
            if source is not None and layer is not None and layer > source:
                upward.append(f"{module} -> {target}")
    assert not upward, upward
    # Every module of the package sits in a layer of the map (the root __init__ is lazy).
    unplaced = sorted(m for m in graph if m != "dina_jax" and _layer(m) is None)
    assert not unplaced, unplaced
