"""Imports follow the flow config -> data + model -> training -> metrics -> results -> studies (issue 12).

A module may import its own package, the leaf modules and anything lower in the flow; every import
counts, also one inside a function. Leaf modules are imported at the top, never lazily.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "stridelab"

# Rank of each top-level part of the package: a module may import parts of lower or equal rank.
RANK = {
    "errors": 0,
    "config": 0,
    "files": 0,
    "registry": 0,
    "validation": 0,  # leaves
    "layers": 1,
    "data": 1,
    "models": 2,
    "training": 3,
    "metrics": 4,
    "build": 5,  # assembles a run's parts
    "train": 6,
    "evaluate": 6,
    "bench": 6,  # entry points
    "studies": 7,
    "study": 7,
    "aggregate": 7,  # grids of runs, their tables
}
LEAVES = {name for name, rank in RANK.items() if rank == 0}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield path, parts[0] if len(parts) > 1 or parts[0] != "__init__" else None


def _imports(path: Path):
    """(imported stridelab module, whether at module level) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top_level = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "stridelab":
            names = [node.module] if node.module != "stridelab" else [f"stridelab.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "stridelab"]
        for name in names:
            yield name, id(node) in top_level


def test_every_part_of_the_package_has_a_rank():
    parts = {p.relative_to(PACKAGE).with_suffix("").parts[0] for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert parts <= set(RANK), f"give these a place in the flow: {sorted(parts - set(RANK))}"


def upward_imports(path: Path, part: str) -> list[str]:
    """Imports in ``path`` (a module of ``part``) of parts ranked above ``part``."""
    wrong = []
    for name, _ in _imports(path):
        target = name.split(".")[1] if name.count(".") else None
        if target and target != part and RANK[target] > RANK[part]:
            wrong.append(f"{path.name} imports {name} ({part} {RANK[part]} < {target} {RANK[target]})")
    return wrong


def test_no_module_imports_a_part_above_it():
    wrong = [w for path, part in _modules() if part is not None for w in upward_imports(path, part)]
    assert not wrong, "\n".join(wrong)


def test_leaf_modules_are_imported_at_the_top():
    lazy = [
        f"{path.relative_to(PACKAGE)}: {name}"
        for path, _ in _modules()
        for name, top in _imports(path)
        if not top and name.split(".")[1] in LEAVES
    ]
    assert not lazy, "\n".join(lazy)


def test_no_import_cycles_between_modules():
    graph = {}
    for path, _ in _modules():
        mod = ".".join(("stridelab", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        graph[mod] = {name for name, _ in _imports(path)}
    # A module imports its package's __init__ too; leave packages out, they only re-export.
    packages = {
        ".".join(("stridelab", *p.relative_to(PACKAGE).parent.parts)).rstrip(".") for p in PACKAGE.rglob("__init__.py")
    }
    edges = {
        m: {t for t in ts if t in graph and t not in packages and t != m}
        for m, ts in graph.items()
        if m not in packages
    }
    state, cycle = {}, []

    def visit(m, stack):
        state[m] = "open"
        for t in edges.get(m, ()):
            if state.get(t) == "open":
                cycle.append(" -> ".join([*stack[stack.index(t) :], t]) if t in stack else f"{m} -> {t}")
            elif t not in state:
                visit(t, [*stack, t])
        state[m] = "done"

    for m in edges:
        if m not in state:
            visit(m, [m])
    assert not cycle, "\n".join(cycle)


def test_the_check_finds_an_upward_import(tmp_path):
    """The counter-case: a layer importing the training package is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n\ndef f():\n    from stridelab.training import Classifier\n")
    assert upward_imports(bad, "layers") == ["bad.py imports stridelab.training (layers 1 < training 3)"]
    assert upward_imports(bad, "metrics") == []


def private_imports(path: Path) -> list[str]:
    """``from stridelab.x import _name`` in ``path``: a private name lent to another module."""
    return [
        f"{path.name} imports {node.module}.{a.name}"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "stridelab"
        for a in node.names
        if a.name.startswith("_") and not a.name.startswith("__")
    ]


def test_no_module_imports_another_modules_private_name(tmp_path):
    wrong = [w for path, _ in _modules() for w in private_imports(path)]
    assert not wrong, "\n".join(wrong)
    bad = tmp_path / "bad.py"  # the counter-case
    bad.write_text("from stridelab.build import _helper, build_run\nfrom __future__ import annotations\n")
    assert private_imports(bad) == ["bad.py imports stridelab.build._helper"]
