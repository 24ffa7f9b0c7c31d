"""The `dg` CLI works from the repository root on our layout ([tool.dg] in pyproject.toml points it
at orchestration/definitions.py): `dg check defs` loads the code location, and fails, naming the
setting, when the definitions cannot load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).parent / "dg"

pytestmark = pytest.mark.slow  # a code location loads in a subprocess (about 20 s each)


def _dg_check_defs(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "TOWERFLOW_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "VIRTUAL_ENV": sys.prefix,
        "NO_COLOR": "1",
        **env,
    }
    (tmp_path / "dagster").mkdir(exist_ok=True)
    return subprocess.run(
        [str(DG), "check", "defs"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_dg_check_defs_loads_the_code_location_from_the_repository_root(tmp_path):
    ok = _dg_check_defs(tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "All definitions loaded successfully" in ok.stdout + ok.stderr
    # what it loads is ours: a definition that cannot load fails the check, and says why
    bad = _dg_check_defs(tmp_path, TOWERFLOW_RETRAIN_CRON="every day")
    assert bad.returncode != 0
    assert "TOWERFLOW_RETRAIN_CRON='every day' is not a cron expression" in bad.stdout + bad.stderr
