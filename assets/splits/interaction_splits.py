import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._config import to_library
from assets.splits.config import SplitConfig
from models.splits.rules import SplitRules
from assets.reporting import figures_metadata, log_figures, md_table, table_metadata
from orchestration.versions import WAREHOUSE_POOL, code_version
from models.splits.build import build_splits
from orchestration.resources import MlflowTracker


@dg.asset(
    deps=["clean_interactions"],
    kinds={"duckdb"},
    owners=["team:recsys"],
    tags={"layer": "gold"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def interaction_splits(
    context: dg.AssetExecutionContext, config: SplitConfig, duckdb: DuckDBResource, mlflow: MlflowTracker
) -> dg.MaterializeResult:
    """Positive (user, item) pairs with a temporal split: per-user leave-last-out by default,
    or one global time cut."""
    params = to_library(config, SplitRules).sql_params()
    with duckdb.get_connection() as con:
        sql = build_splits(con, params)
        rows = con.execute(
            """SELECT split, count(*), count(DISTINCT user_id), count(DISTINCT item_id), min(ts), max(ts)
               FROM interaction_splits GROUP BY split ORDER BY split"""
        ).fetchall()
        cold_items = con.execute(
            """SELECT count(DISTINCT item_id) FROM interaction_splits
               WHERE split IN ('valid', 'test')
                 AND item_id NOT IN (SELECT item_id FROM interaction_splits WHERE split = 'train')"""
        ).fetchall()[0][0]
        table = table_metadata(con, "interaction_splits")
    figures = {f"{s}_pairs": n for s, n, *_ in rows}
    figures.update({f"{s}_users": u for s, _, u, *_ in rows})
    figures["pairs"] = sum(n for _, n, *_ in rows)
    figures["eval_items_unseen_in_train"] = int(cold_items)
    if not figures.get("test_pairs"):
        context.log.warning(
            "interaction_splits: no test pairs; users need at least "
            f"{config.min_user_positives} positive items for leave-last-out"
        )
    log_figures(context, mlflow, "interaction_splits", figures, params={"strategy": config.strategy})
    return dg.MaterializeResult(
        metadata=figures_metadata(
            figures,
            sql={"interaction_splits": sql},
            tables={"splits": md_table(rows, ("split", "pairs", "users", "items", "first ts", "last ts"))},
        )
        | table
    )
