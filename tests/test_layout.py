"""The structure DESIGN.md promises, read from the source with `ast` (nothing imported):

- models/ (the library) never imports Dagster, Dagster Pipes included, nor assets/ or
  orchestration/: the Pipes side of distributed training is assets/training/_rank.py, and
  models/retrieval/rank.py takes its channel as an argument;
- every module in assets/ imports Dagster (it holds Dagster code only);
- the folders under artifacts/ are named in models/artifacts.py only.

The layer order inside models/ and the absence of import circles are tests/test_layers.py's.

Imports anywhere in a module count, those inside functions included: a lazy import is still a
dependency.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: str) -> dict[str, Path]:
    return {_module(p): p for p in sorted((ROOT / package).rglob("*.py"))}


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imports(path: Path) -> set[str]:
    """Every dotted name imported anywhere in the file, and for `from a import b` also a.b."""
    out = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; this project imports absolutely"
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _top(name: str) -> str:
    return name.split(".")[0]


def _is_dagster(name: str) -> bool:
    return _top(name) == "dagster" or _top(name).startswith("dagster_")


def test_models_never_import_dagster_assets_or_orchestration():
    bad = {
        (m, name)
        for m, p in _modules("models").items()
        for name in _imports(p)
        if _is_dagster(name) or _top(name) in ("assets", "orchestration")
    }
    assert not bad, sorted(bad)


def test_every_module_in_assets_imports_dagster():
    lacking = {
        m for m, p in _modules("assets").items() if p.name != "__init__.py" and not any(map(_is_dagster, _imports(p)))
    }
    assert not lacking, sorted(lacking)


@pytest.mark.parametrize("package", ["models", "assets", "orchestration"])
def test_artifact_folders_are_named_in_models_artifacts_only(package):
    from models import artifacts

    names = {
        getattr(artifacts, n)
        for n in ("MODELS", "EMBEDDINGS", "INDEX", "USER_HISTORIES", "RECOMMENDATIONS", "RANKING")
        + ("SEMANTIC_IDS", "GENERATIVE", "ARTIFACTS")
    }
    spelled = {
        (m, node.right.value, node.lineno)
        for m, p in _modules(package).items()
        if m != "models.artifacts"
        for node in ast.walk(_tree(p))
        if isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Div)
        and isinstance(node.right, ast.Constant)
        and node.right.value in names
    }
    assert not spelled, sorted(spelled)
