import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.clean.clean_interactions import RULES_KEY
from assets.clean.config import GxConfig
from models.clean.rules import params_from_json
from orchestration.versions import WAREHOUSE_POOL
from assets.reporting import audit_check, check_result, expectations_check
from models.sql import sql_text
from orchestration.resources import MlflowTracker


def _accounting(context, duckdb, mlflow, audit: str, check: str, key: str):
    with duckdb.get_connection() as con:
        cur = con.execute(sql_text(audit))
        names = [d[0] for d in cur.description]
        row = dict(zip(names, cur.fetchall()[0]))
    figures = {k: int(v) for k, v in row.items()}
    figures["threshold_unaccounted"] = 0
    return check_result(context, mlflow, check, row["unaccounted"] == 0, figures, asset_key=key)


@dg.asset_check(
    asset="clean_interactions",
    pool=WAREHOUSE_POOL,
    blocking=True,
    description="raw rows = clean + exact duplicates + quarantined: no row is lost.",
)
def event_row_accounting(context, duckdb: DuckDBResource, mlflow: MlflowTracker):
    return _accounting(context, duckdb, mlflow, "audit_event_accounting", "event_row_accounting", "clean_interactions")


@dg.asset_check(
    asset="clean_interactions",
    pool=WAREHOUSE_POOL,
    blocking=True,
    description="Per landing file: raw rows = clean (kept from it) + duplicates + quarantined, and the "
    "cleaning ledger (cleaned_event_files) matches the tables; every live file has been cleaned.",
)
def event_file_accounting(context, duckdb: DuckDBResource, mlflow: MlflowTracker):
    return audit_check(
        context,
        duckdb,
        mlflow,
        "audit_event_files",
        "event_file_accounting",
        "files",
        ("file", "raw", "ledger raw", "clean", "ledger clean", "ledger dups", "quarantined", "ledger quarantined"),
    )


@dg.asset_check(
    asset="clean_items",
    pool=WAREHOUSE_POOL,
    blocking=True,
    description="raw item rows = clean items + superseded versions + quarantined.",
)
def item_row_accounting(context, duckdb: DuckDBResource, mlflow: MlflowTracker):
    return _accounting(context, duckdb, mlflow, "audit_item_accounting", "item_row_accounting", "clean_items")


def applied_rules(context) -> dict:
    """The cleaning rules (SQL parameters) the latest clean_interactions was built with, as its
    materialization recorded them: the run's config, not the defaults."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("clean_interactions"))
    recorded = event.asset_materialization.metadata.get(RULES_KEY) if event else None
    if recorded is None:
        raise dg.Failure(
            f"clean_interactions has no recorded cleaning rules ({RULES_KEY!r} in its materialization "
            "metadata): materialize clean_interactions, then run this check"
        )
    return params_from_json(recorded.value)


@dg.asset_check(
    asset="clean_interactions",
    pool=WAREHOUSE_POOL,
    description="Great Expectations, by the rules the table was cleaned with: non-null ids and "
    "timestamps, timestamps in range, known event types, unique event ids, ratings in range, on "
    "the rows the latest cleaning pass added (the new files' rows; the whole table after a full "
    "pass: sql/clean_interactions_latest.sql). "
    "Not blocking (the graph goes on; row accounting is the data gate), but a failure is an ERROR: "
    "it means clean rows break the rules that cleaned them, wrong data rather than a lost challenger.",
)
def clean_interactions_expectations(context, config: GxConfig, duckdb: DuckDBResource, mlflow: MlflowTracker):
    import great_expectations.expectations as gxe

    p = applied_rules(context)
    return expectations_check(
        context,
        duckdb,
        mlflow,
        config,
        "clean_interactions_expectations",
        "SELECT event_id, user_id, item_id, event_type, ts, "
        "CASE WHEN list_contains($rating_types, event_type) THEN value END AS rating "
        f"FROM ({sql_text('clean_interactions_latest')})",
        [
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="ts"),
            gxe.ExpectColumnValuesToBeBetween(column="ts", min_value=p["min_timestamp"], max_value=p["max_timestamp"]),
            gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=p["event_types"]),
            gxe.ExpectColumnValuesToBeUnique(column="event_id"),
            gxe.ExpectColumnValuesToBeBetween(column="rating", min_value=p["rating_min"], max_value=p["rating_max"]),
        ],
        params={"rating_types": p["rating_types"]},
    )
