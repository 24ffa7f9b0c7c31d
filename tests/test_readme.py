"""The README's quick start, run as written: every shell block of its "Quick start" section, in
order, in a fresh TOWERFLOW_HOME, from the repository root (the first block is `make demo`)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def quick_start_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = re.search(r"^## Quick start\n(.*?)^## ", text, re.S | re.M).group(1)
    return re.findall(r"^```bash\n(.*?)^```", section, re.S | re.M)


def test_the_quick_start_has_the_demo_first_and_the_cli_after():
    blocks = quick_start_blocks()
    assert blocks and blocks[0].split("#")[0].strip() == "make demo"
    assert all(line.startswith(".venv/bin/towerflow ") for b in blocks[1:] for line in b.strip().splitlines())


@pytest.mark.slow
def test_the_readme_quick_start_runs_as_written(tmp_path):
    if not (REPO / ".venv" / "bin" / "towerflow").exists():
        pytest.skip("the quick start runs the repository's .venv (make install)")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI")}
    env.update(TOWERFLOW_HOME=str(home), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    # Installing is not under test, and a test must not reach the package index: `make` treats the
    # venv's install stamp as up to date (-o) even where pyproject.toml is newer than it.
    no_install = 'make() { command make -o .venv/.installed "$@"; }\n'
    outputs = []
    for block in quick_start_blocks():
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", no_install + block],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert proc.returncode == 0, f"{block}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout + proc.stderr)
    demo, cli = outputs[0], "\n".join(outputs[1:])
    # the demo's console is INFO (no DEBUG RUN_SUCCESS event); its exit code 0 above is the run's
    # success, and towerflow status names the champion it registered
    assert "models:/towerflow-two-tower@champion" in demo
    # what the quick start says of the answers: score_kind and fallback in every format
    assert "user_id,rank,item_id,score,score_kind,fallback" in cli
    assert "someone-new,1," in cli and ",positive_users,True" in cli  # the unknown user, flagged
    assert "unknown_event_type" in cli
