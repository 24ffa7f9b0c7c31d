"""Code versions are derived from what an asset's module imports (orchestration/versions.py): editing
any module it reaches, or a SQL file that code names, changes the version; editing anything
else does not. Run over real files: a small package written to a temp dir, and a copy of this
repository's assets/, models/ and sql/."""

from __future__ import annotations

import shutil
from pathlib import Path

from orchestration.versions import ROOT, CodeGraph, code_version


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _version(root: Path, module: str) -> str:
    return CodeGraph(root, packages=("pkg",)).version(module)  # a fresh graph: nothing cached


def test_the_version_follows_every_module_the_asset_reaches_and_nothing_else(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/step.py": (
                "import json\n"  # not ours: never part of the version
                "import pkg.lib as lib\n"
                "from .sub import rel\n"
                "def run():\n"
                "    from pkg import late  # imported inside a function: still counts\n"
                "    return lib, rel, late, json\n"
            ),
            "pkg/lib.py": "from pkg.deep import VALUE\nSTEP = 'rel_a'  # names sql/rel_a.sql\n",
            "pkg/deep.py": "VALUE = 1\n",
            "pkg/late.py": "X = 1\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/rel.py": "Y = 1\n",
            "pkg/unrelated.py": "import pkg.step\n",  # imports the step; the step does not import it
            "sql/rel_a.sql": "SELECT 1\n",
            "sql/rel_b.sql": "SELECT 2\n",
        },
    )
    graph = CodeGraph(tmp_path, packages=("pkg",))
    assert graph.closure("pkg.step") == ["pkg", "pkg.deep", "pkg.late", "pkg.lib", "pkg.step", "pkg.sub", "pkg.sub.rel"]
    assert graph.sql_names(graph.closure("pkg.step")) == ["rel_a"]

    before = _version(tmp_path, "pkg.step")
    assert before == _version(tmp_path, "pkg.step")  # stable across loads
    for rel in ("pkg/unrelated.py", "sql/rel_b.sql"):
        _write(tmp_path, {rel: (tmp_path / rel).read_text() + "# edited\n"})
        assert _version(tmp_path, "pkg.step") == before, rel
    for rel in ("pkg/deep.py", "pkg/late.py", "pkg/sub/rel.py", "pkg/sub/__init__.py", "sql/rel_a.sql"):
        _write(tmp_path, {rel: (tmp_path / rel).read_text() + "-- edited\n" if rel.endswith(".sql") else "Z = 2\n"})
        after = _version(tmp_path, "pkg.step")
        assert after != before, rel
        before = after


def test_ranked_recommendations_follows_the_ranking_data_and_the_recommender(tmp_path):
    # both are reached only through other modules: where a hand-written list leaves them out
    module = "assets.ranking.ranked_recommendations"
    reached = CodeGraph(ROOT).closure(module)
    assert {"models.ranking.data", "models.serving.recommender", "models.ranking.ranker"} <= set(reached)
    assert "models.sources.synthetic" not in reached

    for folder in ("assets", "models", "sql"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    copy = lambda: CodeGraph(tmp_path).version(module)
    assert copy() == code_version(module)  # the copy is the same code
    (tmp_path / "models/sources/synthetic.py").write_text("# unrelated edit\n")
    assert copy() == code_version(module)
    for rel in ("models/ranking/data.py", "models/serving/recommender.py"):
        before = copy()
        path = tmp_path / rel
        path.write_text(path.read_text() + "\n# edited\n")
        assert copy() != before, rel
