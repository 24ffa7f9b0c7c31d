"""Installable for real: a non-editable install of this repo, used from outside it, finds its SQL
and instance settings as package data, loads the Dagster definitions and builds a warehouse."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_definitions import EXPECTED_CHECKS, EXPECTED_GROUPS

REPO = Path(__file__).resolve().parents[1]

PROBE = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import models, models.sql
    from models.sql import SQL_DIR, sql_text
    from orchestration.definitions import build_definitions
    from orchestration.instance import instance_settings
    from models.sources.synthetic import generate
    from models.splits.warehouse import build_warehouse
    from models.splits.warehouse import default_warehouse_params
    import duckdb

    home = Path(sys.argv[1])
    defs = build_definitions(home)
    generate(home / "landing", n_users=40, n_items=30, n_events=600, seed=1, log=lambda m: None)
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    build_warehouse(con, home / "landing", **default_warehouse_params())
    pairs = con.execute("SELECT count(*) FROM interaction_splits").fetchall()[0][0]
    print(json.dumps({
        "models": models.__file__, "sql_dir": str(SQL_DIR),
        "sql": sorted(p.name for p in SQL_DIR.iterdir() if p.name.endswith(".sql")),
        "vocabularies_sql": sql_text("vocabularies"),
        "assets": sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()),
        "checks": len(list(defs.resolve_asset_graph().asset_check_keys)),
        "pool_limit": instance_settings()["concurrency"]["pools"]["default_limit"],
        "pairs": pairs,
    }))
""")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    # a copy of what the build reads, so building leaves nothing behind in the checkout
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("assets", "models", "orchestration", "sql"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    # a real (non-editable) build and install, without its dependencies (the running environment
    # has them) and without network for the build backend
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(src),
        ],
        check=True,
        cwd=src,
    )
    return target


def test_the_installed_package_runs_from_outside_the_checkout(installed, tmp_path):
    import json

    env = {**os.environ, "PYTHONPATH": str(installed), "TOWERFLOW_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "home")], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # the code and the SQL come from the install, not from this checkout
    assert Path(got["models"]).is_relative_to(installed) and Path(got["sql_dir"]).is_relative_to(installed)
    assert got["sql"] == sorted(p.name for p in (REPO / "sql").glob("*.sql"))  # every SQL file shipped
    assert got["vocabularies_sql"] == (REPO / "sql" / "vocabularies.sql").read_text()
    # the installed code location holds the whole graph test_definitions.py pins, no more, no less
    assert got["assets"] == sorted(EXPECTED_GROUPS) and got["checks"] == len(EXPECTED_CHECKS)
    assert got["pool_limit"] == 1 and got["pairs"] > 0


def test_every_third_party_import_is_a_declared_dependency():
    import ast
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {
        d.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].split("~")[0].strip().lower()
        for d in declared
    }
    # import name -> distribution name where they differ
    dist = {
        "yaml": "pyyaml",
        "faiss": "faiss-cpu",
        "great_expectations": "great-expectations",
        "dagster_duckdb": "dagster-duckdb",
        "dagster_pipes": "dagster-pipes",
        "sklearn": "scikit-learn",
    }
    ours = {"assets", "models", "orchestration", "sql"}
    imported = set()
    for folder in ("assets", "models", "orchestration"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in ours}
    missing = {m for m in third_party if dist.get(m, m).replace("_", "-") not in names}
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
