"""clean_items: one row per catalog item, latest version wins; bad rows go to quarantined_items."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._config import to_library
from assets.clean.config import CleaningConfig
from assets.reporting import content_version, figures_metadata, log_figures, md_table, table_metadata, table_digest
from orchestration.versions import WAREHOUSE_POOL, code_version
from models.clean.cleaning import clean_items as run_cleaning
from models.clean.rules import CleaningRules
from orchestration.resources import MlflowTracker


@dg.asset(
    deps=["raw_items"],
    kinds={"duckdb"},
    owners=["team:recsys"],
    tags={"layer": "silver"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def clean_items(
    context: dg.AssetExecutionContext, config: CleaningConfig, duckdb: DuckDBResource, mlflow: MlflowTracker
) -> dg.MaterializeResult:
    """Typed catalog (categories as a list, created_at in UTC, year, content hash); rows that
    break a rule are written to the `quarantined_items` table with a reason."""
    params = to_library(config, CleaningRules).sql_params()
    with duckdb.get_connection() as con:
        sql = run_cleaning(con, params)
        raw, clean, superseded, with_cats = con.execute(
            """SELECT (SELECT count(*) FROM raw_items), count(*), coalesce(sum(superseded_count), 0),
                      count(*) FILTER (WHERE len(categories) > 0) FROM clean_items"""
        ).fetchall()[0]
        by_reason = con.execute(
            "SELECT reason, count(*) AS n FROM quarantined_items GROUP BY reason ORDER BY n DESC, reason"
        ).fetchall()
        table = table_metadata(con, "clean_items")
        digest = table_digest(con, "clean_items")
    quarantined = sum(n for _, n in by_reason)
    figures = {
        "raw_rows": raw,
        "clean_items": clean,
        "superseded_rows": int(superseded),
        "quarantined_rows": quarantined,
        "items_with_categories": with_cats,
    }
    log_figures(context, mlflow, "clean_items", {**figures, **{f"quarantined.{r}": n for r, n in by_reason}})
    return dg.MaterializeResult(
        metadata=figures_metadata(
            figures, sql=sql, tables={"quarantine_by_reason": md_table(by_reason, ("reason", "rows"))}
        )
        | table,
        data_version=content_version(context, digest),
    )
