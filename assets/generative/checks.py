import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.reporting import audit_check
from models.versions import WAREHOUSE_POOL
from orchestration.resources import MlflowTracker


@dg.asset_check(
    asset="item_semantic_ids",
    blocking=True,
    pool=WAREHOUSE_POOL,
    description="Every catalog item has a semantic ID and no two items share one (the generative "
    "retriever can only emit, and be scored on, items with a unique code).",
)
def every_item_has_a_unique_semantic_id(context, duckdb: DuckDBResource, mlflow: MlflowTracker):
    return audit_check(
        context,
        duckdb,
        mlflow,
        "audit_semantic_ids",
        "every_item_has_a_unique_semantic_id",
        "items",
        ("item_id", "problem"),
    )
