"""The Dagster code location: assets grouped by folder (with their automation conditions and
freshness policies: orchestration/automation.py), their checks, jobs, sensors and resources."""

from pathlib import Path

import dagster as dg

import assets.clean
import assets.ingest
import assets.splits
import assets.training
import assets.abtest
import assets.serving
import assets.ranking
import assets.generative
from orchestration.automation import automate, automation_sensor
from orchestration.jobs import all_assets_job, data_job, incremental_item_embedding_job, training_job
from orchestration.resources import build_resources
from orchestration.sensors import dead_run_sweep, new_events_sensor, new_items_sensor

GROUPS = {
    "ingest": assets.ingest,
    "clean": assets.clean,
    "splits": assets.splits,
    "training": assets.training,
    "abtest": assets.abtest,
    "serving": assets.serving,
    "ranking": assets.ranking,
    "generative": assets.generative,
}


def build_definitions(home: Path | None = None) -> dg.Definitions:
    """Definitions over the state directory `home` (default: $TOWERFLOW_HOME)."""
    return dg.Definitions(
        assets=automate(
            [a for group, pkg in GROUPS.items() for a in dg.load_assets_from_package_module(pkg, group_name=group)]
        ),
        asset_checks=[c for pkg in GROUPS.values() for c in dg.load_asset_checks_from_package_module(pkg)],
        jobs=[all_assets_job, data_job, training_job, incremental_item_embedding_job],
        sensors=[automation_sensor, new_items_sensor, new_events_sensor, dead_run_sweep],
        resources=build_resources(home),
        # One process: DuckDB allows a single writer, and steps are short next to process start-up.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
