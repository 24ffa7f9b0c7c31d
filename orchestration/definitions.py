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
from assets.clean.clean_interactions import build_clean_events
from assets.ingest.raw_events import build_raw_events
from orchestration.automation import automate, automation_sensor
from orchestration.jobs import all_assets_job, data_job, incremental_item_embedding_job, training_job
from orchestration.resources import build_resources
from orchestration.partitions import EVENT_ASSETS, event_partitions as partitions_setting
from orchestration.sensors import build_new_events_sensor, dead_run_sweep, new_items_sensor

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


def build_definitions(
    home: Path | None = None, event_partitions: dg.DynamicPartitionsDefinition | None | str = "setting"
) -> dg.Definitions:
    """Definitions over the state directory `home` (default: $TOWERFLOW_HOME), with the event
    assets partitioned per landing file or not (default: $TOWERFLOW_EVENT_PARTITIONS,
    orchestration/partitions.py)."""
    partitions = partitions_setting() if event_partitions == "setting" else event_partitions
    loaded = [a for group, pkg in GROUPS.items() for a in dg.load_assets_from_package_module(pkg, group_name=group)]
    if partitions is not None:
        loaded = [_partitioned(a, partitions) for a in loaded]
    return dg.Definitions(
        assets=automate(loaded, sensor_driven=EVENT_ASSETS if partitions is not None else ()),
        asset_checks=[c for pkg in GROUPS.values() for c in dg.load_asset_checks_from_package_module(pkg)],
        jobs=[all_assets_job, data_job, training_job, incremental_item_embedding_job],
        sensors=[automation_sensor, new_items_sensor, build_new_events_sensor(partitions), dead_run_sweep],
        resources=build_resources(home),
        # One process: DuckDB allows a single writer, and steps are short next to process start-up.
        executor=dg.in_process_executor,
    )


def _partitioned(a, partitions: dg.DynamicPartitionsDefinition):
    """The event assets, built again with one partition per landing file (the same bodies), in
    their group; every other asset as loaded."""
    builders = {"raw_events": build_raw_events, "clean_events": build_clean_events}
    if not isinstance(a, dg.AssetsDefinition) or a.node_def.name not in builders:
        return a
    groups = {key: a.specs_by_key[key].group_name for key in a.keys}
    built = builders[a.node_def.name](partitions)
    return built.map_asset_specs(lambda spec: spec.replace_attributes(group_name=groups[spec.key]))


defs = build_definitions()
