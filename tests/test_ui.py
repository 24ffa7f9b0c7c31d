"""UI smoke test: dagster-webserver on loopback serves every asset, its group, lineage and checks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_definitions import EXPECTED_CHECKS, EXPECTED_GROUPS

pytestmark = pytest.mark.slow

QUERY = """{ assetNodes { assetKey { path } groupName dependencyKeys { path }
  assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }"""


AUTOMATION_QUERY = """
{ repositoriesOrError { ... on RepositoryConnection { nodes {
    sensors { name sensorState { status } targets { pipelineName } }
    schedules { name cronSchedule pipelineName }
} } } }
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, query: str) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_webserver_shows_groups_lineage_and_checks(tmp_path):
    port = _free_port()
    env = {**os.environ, "TOWERFLOW_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    exe = Path(sys.executable).parent / "dagster-webserver"
    proc = subprocess.Popen(
        [str(exe), "-m", "orchestration.definitions", "-h", "127.0.0.1", "-p", str(port)],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}/graphql"
        deadline = time.time() + 120
        data = None
        while time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                data = _post(url, QUERY)
                if data.get("data", {}).get("assetNodes"):
                    break
            except OSError:
                pass
            time.sleep(1)
        assert data and data["data"]["assetNodes"], data
        nodes = {"/".join(n["assetKey"]["path"]): n for n in data["data"]["assetNodes"]}
        assert {k: n["groupName"] for k, n in nodes.items()} == EXPECTED_GROUPS
        assert {"/".join(d["path"]) for d in nodes["vocabularies"]["dependencyKeys"]} == {
            "interaction_splits",
            "clean_items",
        }
        checks = {c["name"]: c["blocking"] for n in nodes.values() for c in n["assetChecksOrError"]["checks"]}
        assert checks["split_no_time_leakage"] is True and "clean_interactions_expectations" in checks
        # every check, with its blocking flag, as the code location defines them
        assert checks == {name: blocking for (_, name), blocking in EXPECTED_CHECKS.items()}
        assert checks["beats_popularity_on_valid_ndcg"] is True
        assert checks["ranking_beats_retrieval_on_valid_ndcg"] is True  # the UI shows retrieve -> rank gated
        assert "promoted_model" in {"/".join(d["path"]) for d in nodes["ranking_candidates"]["dependencyKeys"]}
        assert checks["every_item_has_a_unique_semantic_id"] is True
        repos = _post(url, AUTOMATION_QUERY)["data"]["repositoriesOrError"]["nodes"]
        sensors = {s["name"]: s for r in repos for s in r["sensors"]}
        schedules = {s["name"]: s for r in repos for s in r["schedules"]}
        assert sensors["new_items_sensor"]["targets"][0]["pipelineName"] == "incremental_item_embedding_job"
        assert {s["sensorState"]["status"] for s in sensors.values()} == {"RUNNING"}  # on with the daemon
        assert "new_events_sensor" in sensors
        assert "automation_sensor" in sensors and schedules == {}  # the retrain is the assets' on_cron
    finally:
        proc.terminate()
        proc.wait(timeout=30)
