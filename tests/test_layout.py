"""The house: layers along the data's path (DESIGN section 0), read from the source with ast.

Every import in the package counts (top level, inside functions, under TYPE_CHECKING):
a module imports only from its own layer's modules or from layers below; no import
cycles; no private name imported from another subpackage; modules and functions stay
small enough to read.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tarstream"

#: Each top-level module or subpackage of tarstream and its layer, lowest first.
LAYERS = {
    "errors": 0,
    "world": 0,
    "stage": 0,
    "format": 1,
    "codecs": 2,
    "storage": 3,
    "plan": 4,
    "read": 5,
    "stages": 6,
    "run": 7,
    "write": 8,
    "cli": 9,
    "__main__": 10,
    "testing": 9,
    "": 9,  # tarstream/__init__.py, the public face
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _module_name(path: Path, root: Path) -> str:
    parts = ["tarstream", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {_module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def _room(module: str) -> str:
    """The top-level module or subpackage a module belongs to ("" for the package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(module: str, path: Path, known: set[str]) -> Iterator[tuple[str, str, int]]:
    """(imported tarstream module, imported name or "", line) for every import."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tarstream":
                    yield alias.name, "", node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "tarstream":
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in known:  # ``from . import module``
                    yield submodule, "", node.lineno
                else:
                    yield target, alias.name, node.lineno


def _graph(root: Path = PACKAGE) -> dict[str, list[tuple[str, str, int]]]:
    modules = _modules(root)
    known = set(modules)
    return {name: list(_imports(name, path, known)) for name, path in modules.items()}


def layer_violations(root: Path = PACKAGE) -> list[str]:
    """Imports from a higher layer, and private names imported across subpackages."""
    problems = []
    for module, imports in _graph(root).items():
        room = _room(module)
        for target, name, line in imports:
            other = _room(target)
            if other not in LAYERS or room not in LAYERS:
                problems.append(f"{module}:{line}: {target} is in no layer (add it to LAYERS)")
            elif LAYERS[other] > LAYERS[room]:
                problems.append(
                    f"{module}:{line}: imports {target} ({other}, layer {LAYERS[other]}) "
                    f"from layer {LAYERS[room]} ({room})"
                )
            if other != room and (name.startswith("_") or target.split(".")[-1].startswith("_")):
                problems.append(f"{module}:{line}: imports private {target}.{name} across rooms")
    return problems


def import_cycles(root: Path = PACKAGE) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan), as sorted lists."""
    graph = {m: sorted({t for t, _, _ in imports if t != m}) for m, imports in _graph(root).items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, []):
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
                cycles.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_every_import_goes_down_the_layers_and_no_private_name_crosses_rooms() -> None:
    assert layer_violations() == []


def test_no_module_imports_itself_through_others() -> None:
    assert import_cycles() == []


def test_every_room_of_the_package_is_in_a_layer() -> None:
    rooms = {_room(module) for module in _modules()}
    assert rooms == set(LAYERS)


@pytest.mark.parametrize(
    ("module", "source", "found"),
    [
        ("format/scan.py", "from ..run.pipeline import Pipeline\n", "from layer 1 (format)"),
        ("plan/split.py", "from ..stages.memory import _references\n", "imports private"),
        ("stage.py", "def f():\n    from .stages.batch import Batch\n", "from layer 0 (stage)"),
        ("read/shard.py", "from . import read_shards\n", "cycle"),
    ],
)
def test_the_checks_catch_a_bad_import(
    tmp_path: Path, module: str, source: str, found: str
) -> None:
    copy = tmp_path / "tarstream"
    for path in PACKAGE.rglob("*.py"):
        target = copy / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    bad = copy / module
    bad.write_text(bad.read_text() + "\n" + source)
    problems = layer_violations(copy) + [f"cycle {c}" for c in import_cycles(copy)]
    assert any(found in problem for problem in problems), problems


def test_modules_and_functions_stay_small() -> None:
    long_modules, long_functions = [], []
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}: {lines} lines")
    assert long_modules == []
    assert long_functions == []


def test_the_public_face_types_every_lazy_name() -> None:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    typed: set[str] = set()
    lazy: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            typed |= {
                a.asname or a.name
                for n in node.body
                if isinstance(n, ast.ImportFrom)
                for a in n.names
            }
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_LAZY":
            lazy = {k.value for k in node.value.keys if isinstance(k, ast.Constant)}  # type: ignore[attr-defined]
    assert lazy and typed == lazy
