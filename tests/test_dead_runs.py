"""A dead run never holds the warehouse: the pool gets its limit on any instance, and after a
`dagster asset materialize` is killed (kill -9) mid-graph the daemon marks it failed, frees its
pool slot, and the next retrain (the assets' `on_cron` automation condition, evaluated by the
daemon's automation sensor) starts on its own (real daemon, real CLI, real sqlite instance in a
temp DAGSTER_HOME)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from orchestration.automation import SENSOR_NAME
from orchestration.definitions import build_definitions
from orchestration.versions import WAREHOUSE_POOL
from models.sources.synthetic import generate
from orchestration.instance import ensure_warehouse_pool, find_dead_runs, instance_settings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_the_warehouse_pool_gets_its_limit_on_an_instance_without_our_dagster_yaml():
    with dg.instance_for_test() as instance:  # no concurrency settings at all
        assert WAREHOUSE_POOL not in instance.event_log_storage.get_concurrency_keys()
        assert ensure_warehouse_pool(instance) == 1
        assert instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).slot_count == 1
        instance.event_log_storage.set_concurrency_slots(WAREHOUSE_POOL, 3)  # an operator's own limit wins
        assert ensure_warehouse_pool(instance) == 3
    assert instance_settings()["concurrency"]["pools"]["default_limit"] == 1


def test_a_run_on_an_instance_without_our_dagster_yaml_sets_the_pool_limit_before_its_steps(tmp_path):
    from assets.ingest.raw_items import raw_items
    from orchestration.resources import build_resources

    with dg.instance_for_test() as instance:
        assert WAREHOUSE_POOL not in instance.event_log_storage.get_concurrency_keys()
        result = dg.materialize([raw_items], resources=build_resources(tmp_path), instance=instance)
        assert result.success
        assert instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).slot_count == 1
        # the step took the slot (it waited for nothing) and gave it back
        assert instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots == []


def _env(home: Path, dagster_home: Path) -> dict:
    return {
        **os.environ,
        "TOWERFLOW_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "TOWERFLOW_RETRAIN_CRON": "* * * * *",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


def _wait(what: str, condition, timeout: float, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the daemon, its code server and any run worker
    proc.wait(timeout=30)


@pytest.mark.slow
def test_a_killed_materialization_does_not_stop_the_next_automated_retrain(tmp_path, monkeypatch):
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").symlink_to(REPO / "orchestration" / "dagster.yaml")  # one run at a time
    generate(home / "landing", n_users=150, n_items=100, n_events=5_000, seed=4, log=lambda m: None)
    env = _env(home, dagster_home)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    instance = dg.DagsterInstance.get()
    logs = tmp_path / "logs"
    logs.mkdir()
    cli = subprocess.Popen(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "orchestration.definitions", "--select", "*"],
        env=env,
        cwd=tmp_path,
        start_new_session=True,
        stdout=open(logs / "cli.log", "w"),
        stderr=subprocess.STDOUT,
    )
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-m", "orchestration.definitions"],
        env=env,
        cwd=tmp_path,
        start_new_session=True,
        stdout=open(logs / "daemon.log", "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        # kill -9 the materialization mid-graph, while one of its steps holds the warehouse slot
        def a_step_holds_the_slot():
            return instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots

        held = _wait("a step of the CLI run to hold the warehouse slot", a_step_holds_the_slot, 90, poll=0.05)
        assert find_dead_runs(instance) == []  # alive: a working run is never swept
        os.killpg(cli.pid, signal.SIGKILL)
        cli.wait(timeout=10)
        dead_id = held[0].run_id
        # no assertion that it is still STARTED here: the daemon's sweep may already have failed it
        # (its first tick can come within a second of the kill; asserting STARTED failed CI once)

        # the daemon's sweep fails it and frees the slot; the per-minute retrain's run then leaves the
        # queue and gets the warehouse (its first pooled step starts, which needs the free slot)
        _wait(
            "the dead run to be marked failed",
            lambda: instance.get_run_by_id(dead_id).status == dg.DagsterRunStatus.FAILURE,
            40,
        )
        info = instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
        assert dead_id not in info.active_run_ids and info.slot_count == 1

        def automated_retrain_got_the_warehouse():
            automated = {"dagster/sensor_name": SENSOR_NAME, "dagster/from_automation_condition": "true"}
            runs = instance.get_runs(filters=dg.RunsFilter(tags=automated))
            for run in runs:
                steps = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
                if any(e.step_key == "raw_events" for e in steps):
                    return run
            return None

        run = _wait(
            "the next automated retrain to start and take the warehouse",
            automated_retrain_got_the_warehouse,
            150,
            poll=1.0,
        )  # up to a minute to the cron tick, then a run worker's start-up
        assert run.status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.SUCCESS)
        # one run for the whole graph, as the retrain was: the roots are due at the tick, everything
        # below them because its parents are requested on the same tick
        assert run.asset_selection == build_definitions(home).resolve_asset_graph().materializable_asset_keys
        failure = instance.all_logs(dead_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "dead_run_sweep" in failure[-1].message and "is gone" in failure[-1].message
        # and its MLflow run, which the killed process never closed, is KILLED rather than RUNNING forever
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
        exp = client.get_experiment_by_name("towerflow")
        dead_mlflow = client.search_runs([exp.experiment_id], filter_string=f"tags.dagster_run_id = '{dead_id}'")
        assert dead_mlflow and {r.info.status for r in dead_mlflow} == {"KILLED"}
    except BaseException:
        for name in ("cli.log", "daemon.log"):
            print(f"--- {name} (tail) ---\n" + (logs / name).read_text()[-4000:])
        raise
    finally:
        _stop(daemon)
        if cli.poll() is None:
            _stop(cli)
        instance.dispose()


@pytest.mark.slow
def test_a_killed_materialization_does_not_hold_the_next_one_from_a_shell_without_a_daemon(tmp_path, monkeypatch):
    """No daemon runs (a newcomer's `make demo` killed by a closed terminal, then run again): the
    next run's start frees the dead run's slot instead of waiting for it forever."""
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").symlink_to(REPO / "orchestration" / "dagster.yaml")
    generate(home / "landing", n_users=150, n_items=100, n_events=5_000, seed=4, log=lambda m: None)
    env = _env(home, dagster_home)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    instance = dg.DagsterInstance.get()
    materialize = [str(BIN / "dagster"), "asset", "materialize", "-m", "orchestration.definitions", "--select"]
    log = tmp_path / "cli.log"
    cli = subprocess.Popen(
        [*materialize, "*"],
        env=env,
        cwd=tmp_path,
        start_new_session=True,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        held = _wait(
            "a step of the CLI run to hold the warehouse slot",
            lambda: instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots,
            90,
            poll=0.05,
        )
        os.killpg(cli.pid, signal.SIGKILL)
        cli.wait(timeout=10)
        dead_id = held[0].run_id
        assert dead_id in instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).active_run_ids

        # without the sweep at its start this run waits for the dead run's slot until the timeout
        second = subprocess.run(
            [*materialize, "raw_items"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240
        )
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert instance.get_run_by_id(dead_id).status == dg.DagsterRunStatus.FAILURE
        failure = instance.all_logs(dead_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "the start of another run" in failure[-1].message and "is gone" in failure[-1].message
        info = instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
        assert info.claimed_slots == [] and info.slot_count == 1
    except BaseException:
        print("--- cli.log (tail) ---\n" + log.read_text()[-4000:])
        raise
    finally:
        if cli.poll() is None:
            _stop(cli)
        instance.dispose()
