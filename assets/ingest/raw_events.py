import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.ingest._ingest import ingest
from orchestration.versions import WAREHOUSE_POOL, code_version
from models.ingest.landing import EVENTS
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset(
    deps=["landing_events"],
    kinds={"duckdb"},
    owners=["team:recsys"],
    tags={"layer": "bronze"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def raw_events(
    context: dg.AssetExecutionContext, paths: TowerflowPaths, duckdb: DuckDBResource, mlflow: MlflowTracker
) -> dg.MaterializeResult:
    """Event files from landing/events/ (CSV, JSONL, Parquet; gzip allowed) as text columns with
    source file and line. New files append; a file already read (same path, size, sha256) is skipped."""
    return ingest(context, EVENTS, paths, duckdb, mlflow)
