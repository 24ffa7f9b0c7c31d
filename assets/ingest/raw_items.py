import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.ingest._ingest import ingest
from orchestration.versions import WAREHOUSE_POOL, code_version
from models.ingest.landing import ITEMS
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset(
    deps=["landing_items"],
    kinds={"duckdb"},
    owners=["team:recsys"],
    tags={"layer": "bronze"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def raw_items(
    context: dg.AssetExecutionContext, paths: TowerflowPaths, duckdb: DuckDBResource, mlflow: MlflowTracker
) -> dg.MaterializeResult:
    """Item catalog files from landing/items/ as text columns with source file and line."""
    return ingest(context, ITEMS, paths, duckdb, mlflow)
