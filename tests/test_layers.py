"""The library's import graph: no module imports one that imports it back (however indirectly),
and no stage's package imports a package above it (imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

MODELS = Path(__file__).resolve().parents[1] / "models"

# a stage may import the stages of a lower rank (and the root modules: sql, artifacts, ...); the
# data half is a chain (cleaning reads what ingest wrote, splits read clean tables), so
# models/splits/warehouse.py, which runs the whole of it for tests and benchmarks, sits at its end
RANK = {
    "ingest": 1,
    "sources": 1,
    "clean": 2,
    "splits": 3,
    "retrieval": 4,
    "index": 5,
    "ranking": 5,
    "generative": 6,
    "serving": 7,
    "abtest": 8,  # decides between served versions from what serving logged
}


def imports() -> dict[str, set[str]]:
    """module -> the models.* modules it imports, anywhere in its body."""
    out = {}
    for path in MODELS.rglob("*.py"):
        parts = path.relative_to(MODELS.parent).with_suffix("").parts
        mod = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "models":
                if node.module == "models":
                    found |= {f"models.{a.name}" for a in node.names}
                else:
                    found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "models"}
        out[mod] = found - {mod}
    return out


def _stage(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def test_no_stage_imports_a_stage_above_it():
    upward = [
        (mod, dep)
        for mod, deps in imports().items()
        for dep in deps
        if _stage(mod) and _stage(dep) and _stage(dep) != _stage(mod) and RANK[_stage(dep)] >= RANK[_stage(mod)]
    ]
    assert not upward, upward


# models/warehouse.py runs the whole data half (ingest, clean, splits) for tests and benchmarks:
# it belongs beside the last step it runs (models/splits/), not among the root helpers.
ROOT_MODULES_ABOVE_THE_STAGES_UNTIL_MOVED = {"models.splits.warehouse"}


def test_the_root_helpers_import_no_stage():
    # the root modules (sql, artifacts, progress) are what every stage may import
    upward = [(mod, dep) for mod, deps in imports().items() for dep in deps if not _stage(mod) and _stage(dep)]
    assert not upward, upward


def test_no_import_cycle_among_modules():
    graph = imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(mod: str, stack: list[str]) -> None:
        state[mod] = 1
        stack.append(mod)
        for dep in sorted(graph.get(mod, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep in graph and not state.get(dep):
                visit(dep, stack)
        stack.pop()
        state[mod] = 2

    for mod in sorted(graph):
        if not state.get(mod):
            visit(mod, [])
    assert not cycles, cycles
