import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.clean.config import GxConfig
from orchestration.versions import WAREHOUSE_POOL
from assets.reporting import audit_check, expectations_check
from orchestration.resources import MlflowTracker


@dg.asset_check(
    asset="interaction_splits",
    pool=WAREHOUSE_POOL,
    blocking=True,
    description="No valid/test pair is earlier than the same user's train pairs.",
)
def split_no_time_leakage(context, duckdb: DuckDBResource, mlflow: MlflowTracker):
    return audit_check(
        context,
        duckdb,
        mlflow,
        "audit_split_leakage",
        "split_no_time_leakage",
        "users",
        ("user_id", "last train ts", "first eval ts"),
    )


@dg.asset_check(
    asset="interaction_splits",
    pool=WAREHOUSE_POOL,
    blocking=True,
    description="Every valid/test user has train history.",
)
def split_eval_users_have_history(context, duckdb: DuckDBResource, mlflow: MlflowTracker):
    return audit_check(
        context,
        duckdb,
        mlflow,
        "audit_split_cold_users",
        "split_eval_users_have_history",
        "users",
        ("user_id", "eval pairs"),
    )


@dg.asset_check(
    asset="interaction_splits",
    pool=WAREHOUSE_POOL,
    blocking=True,
    description="Great Expectations: non-null ids and timestamps, known split labels, one row per (user, item).",
)
def interaction_splits_expectations(context, config: GxConfig, duckdb: DuckDBResource, mlflow: MlflowTracker):
    import great_expectations.expectations as gxe

    def max_eval_pairs_per_user_split(con) -> dict:
        n = con.execute(
            """SELECT max(n) FROM (SELECT count(*) AS n FROM interaction_splits
               WHERE split IN ('valid', 'test') GROUP BY user_id, split)"""
        ).fetchall()[0][0]
        return {"max_eval_pairs_per_user_split": int(n or 0)}

    return expectations_check(
        context,
        duckdb,
        mlflow,
        config,
        "interaction_splits_expectations",
        "SELECT user_id, item_id, ts, split FROM interaction_splits",
        [
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="ts"),
            gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "valid", "test", "cold_start"]),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id"]),
        ],
        more_figures=max_eval_pairs_per_user_split,
    )
