"""What towerflow needs from whichever Dagster instance runs it, applied by code so that it holds
under any DAGSTER_HOME, with or without our dagster.yaml:

- the `warehouse` pool has a limit (one step on the DuckDB file at a time, across all runs);
- a run whose process is gone (kill -9, OOM kill, reboot) does not stay STARTED holding the run
  queue and its pool slot: it is marked FAILED and its slots are freed, so the daemon's sensors and
  the automated retrain go on. Dagster's own run monitoring cannot see this with the default run
  launcher (it has no run-worker health check) nor for runs started by `dagster asset
  materialize`, which no launcher knows about.

The daemon applies both on every tick of the `dead_run_sweep` sensor (orchestration/sensors.py);
every run applies both when it starts, through the warehouse resource (WarehouseResource), so a
shell's materialization after a killed one goes on without a daemon (the dead run's MLflow run
stays RUNNING until the daemon's sweep ends it KILLED: the resource has no MLflow tracker).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

import dagster as dg
import psutil
import yaml

from dagster_duckdb import DuckDBResource

from orchestration.versions import WAREHOUSE_POOL

# Seconds of slack between a run's recorded start and its process's creation time (clock
# granularity): a process created later than that is another process that reused the pid.
PID_REUSE_SLACK_S = 2.0


def instance_settings() -> dict:
    """The committed instance settings (orchestration/dagster.yaml, shipped with the package)."""
    return yaml.safe_load(files("orchestration").joinpath("dagster.yaml").read_text())


def warehouse_pool_limit() -> int:
    return int(instance_settings()["concurrency"]["pools"]["default_limit"])


def ensure_warehouse_pool(instance: dg.DagsterInstance) -> int | None:
    """Give the warehouse pool its limit unless this instance already sets one (explicitly, or
    through its own `concurrency.pools.default_limit`); returns the limit in force, None when
    the instance's storage has no pools."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return None
    if WAREHOUSE_POOL in storage.get_concurrency_keys():
        return storage.get_concurrency_info(WAREHOUSE_POOL).slot_count
    default = instance.get_concurrency_config().pool_config.default_pool_limit
    if default is not None:
        return default  # Dagster sets the pool to it on the first claim
    limit = warehouse_pool_limit()
    storage.set_concurrency_slots(WAREHOUSE_POOL, limit)
    return limit


class WarehouseResource(DuckDBResource):
    """The DuckDB warehouse; when a run starts (before any step claims a slot) it makes sure the
    run's instance limits the warehouse pool, so a `dagster asset materialize` on an instance the
    daemon never touched is held to one opener too."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.instance is not None:
            ensure_warehouse_pool(context.instance)
            # a killed `dagster asset materialize` (kill -9, a closed terminal) left its slot held
            # and no daemon may be running to sweep it: this run would wait for it forever
            for d in fail_dead_runs(context.instance, by="the start of another run"):
                context.log.warning(
                    f"run {d.run_id} ({d.job_name}) marked failed, its warehouse slot freed: {d.reason}"
                )


@dataclass
class DeadRun:
    run_id: str
    job_name: str
    pid: int
    reason: str


def _run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the run's own process, from the first engine event that names one ("Started
    process for run" from a launcher, "Executing steps in process" from `dagster asset
    materialize`); later ones may name short-lived step processes (multiprocess executor)."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.engine_event_data if entry.dagster_event else None
        value = data.metadata.get("pid") if data and data.metadata else None
        if value is not None:
            return int(getattr(value, "value", value))
    return None


def _process_gone(pid: int, started_at: float) -> str | None:
    """Why the process `pid` that started a run at `started_at` (epoch s) is gone, or None."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return f"its process {pid} has exited (zombie)"
        if proc.create_time() > started_at + PID_REUSE_SLACK_S:
            return f"its process {pid} is gone (the pid now belongs to a process started after the run)"
        return None
    except psutil.NoSuchProcess:
        return f"its process {pid} is gone"


def find_dead_runs(instance: dg.DagsterInstance) -> list[DeadRun]:
    """STARTED runs whose executing process no longer exists on this machine. Only with the
    default (local) run launcher, where every run process lives here; with another launcher its
    own health check and Dagster's run monitoring apply."""
    if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
        return []
    dead = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        run = record.dagster_run
        pid = _run_pid(instance, run.run_id)
        started = record.start_time or record.create_timestamp.timestamp()
        if pid is None:
            continue  # not executing steps yet: run monitoring's start timeout covers it
        why = _process_gone(pid, started)
        if why:
            dead.append(DeadRun(run.run_id, run.job_name, pid, why))
    return dead


def fail_dead_runs(instance: dg.DagsterInstance, by: str = "dead_run_sweep") -> list[DeadRun]:
    """Free every dead run's pool slots, then mark it FAILED (with the reason in its event log,
    and `by`: who found it, the daemon's sweep or the start of another run).
    In that order, a FAILED run never holds a slot: whoever sees the failure (a waiting run, the
    UI, a test) also sees the warehouse free. The other order left a window where it did not."""
    dead = find_dead_runs(instance)
    for d in dead:
        run = instance.get_run_by_id(d.run_id)
        if run is None or run.status != dg.DagsterRunStatus.STARTED:
            continue  # it finished meanwhile
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(d.run_id)
        instance.report_run_failed(
            run,
            f"Run {d.run_id} marked failed by towerflow ({by}): {d.reason} "
            "(killed, crashed or the machine restarted) while the run was STARTED.",
        )
    return dead
