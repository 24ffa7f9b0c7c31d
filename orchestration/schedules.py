"""`retrain_schedule`: the whole graph (ingest new files, clean, split, train, evaluate, embed,
index, recommend) on a cron, daily at 03:00 UTC unless TOWERFLOW_RETRAIN_CRON says otherwise."""

import os

import dagster as dg

from orchestration.jobs import all_assets_job

DEFAULT_CRON = "0 3 * * *"


def retrain_cron() -> str:
    return os.environ.get("TOWERFLOW_RETRAIN_CRON", "").strip() or DEFAULT_CRON


def build_retrain_schedule() -> dg.ScheduleDefinition:
    cron = retrain_cron()
    try:  # Dagster validates the cron string itself; say which setting holds the bad one
        return dg.ScheduleDefinition(
            name="retrain_schedule",
            job=all_assets_job,
            cron_schedule=cron,
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="Retrain and re-serve from everything landed so far.",
        )
    except dg.DagsterInvalidDefinitionError as e:
        raise ValueError(f"TOWERFLOW_RETRAIN_CRON={cron!r} is not a cron expression (e.g. {DEFAULT_CRON!r})") from e
