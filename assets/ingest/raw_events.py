import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.ingest._ingest import ingest
from orchestration.partitions import partition_files
from orchestration.versions import WAREHOUSE_POOL, code_version
from models.ingest.landing import EVENTS
from orchestration.resources import MlflowTracker, TowerflowPaths


def build_raw_events(partitions_def: dg.PartitionsDefinition | None = None) -> dg.AssetsDefinition:
    """raw_events, unpartitioned (every new file a run) or one partition per landing file
    (orchestration/partitions.py: the files the run's partitions name)."""

    @dg.asset(
        name="raw_events",
        deps=["landing_events"],
        kinds={"duckdb"},
        owners=["team:recsys"],
        tags={"layer": "bronze"},
        pool=WAREHOUSE_POOL,
        code_version=code_version(__name__),
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run() if partitions_def else None,
    )
    def raw_events(
        context: dg.AssetExecutionContext, paths: TowerflowPaths, duckdb: DuckDBResource, mlflow: MlflowTracker
    ) -> dg.MaterializeResult:
        """Event files from landing/events/ (CSV, JSONL, Parquet; gzip allowed) as text columns with
        source file and line. New files append; a file already read (same path, size, sha256) is skipped."""
        return ingest(context, EVENTS, paths, duckdb, mlflow, only=partition_files(context))

    return raw_events


raw_events = build_raw_events()
