import dagster as dg

from orchestration.versions import WAREHOUSE_POOL, code_version
from dagster_duckdb import DuckDBResource

from assets.reporting import figures_metadata
from models.artifacts import Layout
from models.retrieval.histories import write_user_histories
from models.sql import sql_text
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset(
    deps=["interaction_splits"],
    kinds={"parquet"},
    owners=["team:recsys"],
    tags={"layer": "serving"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def user_histories(
    context: dg.AssetExecutionContext, paths: TowerflowPaths, duckdb: DuckDBResource, mlflow: MlflowTracker
) -> dg.MaterializeResult:
    """What the online service (`towerflow serve`) knows about users, so that it never opens the
    warehouse: every known user's items, oldest first (the user tower's history and the items to
    exclude), and the most popular items (the fallback), as Parquet published by manifest."""
    with duckdb.get_connection() as con:
        manifest = write_user_histories(con, Layout(paths.artifacts).user_histories)
    figures = {k: manifest[k] for k in ("users", "pairs", "popular", "folder")}
    mlflow.log(context, "user_histories", {k: v for k, v in figures.items() if isinstance(v, int)})
    return dg.MaterializeResult(
        metadata=figures_metadata(
            figures, sql={"user_histories": sql_text("user_histories"), "item_popularity": sql_text("item_popularity")}
        )
    )
