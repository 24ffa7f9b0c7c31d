import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.clean.config import GxConfig
from models.clean.gx import load_frame, validate
from assets.versions import WAREHOUSE_POOL
from assets.reporting import audit_check, check_result, md_table
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

    with duckdb.get_connection() as con:
        df, total, sampled = load_frame(
            con, "SELECT user_id, item_id, ts, split FROM interaction_splits", None, config.max_rows, config.seed
        )
        per_user = (
            con.execute(
                """SELECT max(n) FROM (SELECT count(*) AS n FROM interaction_splits
               WHERE split IN ('valid', 'test') GROUP BY user_id, split)"""
            ).fetchall()[0][0]
            or 0
        )
    out = validate(
        df,
        [
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="ts"),
            gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "valid", "test", "cold_start"]),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id"]),
        ],
        total,
        sampled,
    )
    failed = [r for r in out.results if not r[2]]
    figures = {
        "expectations": len(out.results),
        "failed_expectations": len(failed),
        "threshold_failed": 0,
        "rows_validated": out.rows_validated,
        "rows_total": out.rows_total,
        "sampled": out.sampled,
        "max_eval_pairs_per_user_split": int(per_user),
    }
    return check_result(
        context,
        mlflow,
        "interaction_splits_expectations",
        out.success,
        figures,
        tables={
            "expectations_table": md_table(out.results, ("expectation", "column", "passed", "unexpected", "observed"))
        },
    )
