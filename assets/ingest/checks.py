import dagster as dg
from dagster_duckdb import DuckDBResource

from orchestration.versions import WAREHOUSE_POOL
from assets.reporting import audit_check, check_result, md_table
from orchestration.resources import MlflowTracker


def _files_check(context, kind: str, duckdb, mlflow, check: str):
    with duckdb.get_connection() as con:
        bad = con.execute(
            "SELECT path, status, message FROM ingested_files WHERE kind = $k AND status IN ('rejected', 'partial', 'empty') ORDER BY path",
            {"k": kind},
        ).fetchall()
    return check_result(
        context,
        mlflow,
        check,
        not bad,
        {"problem_files": len(bad), "threshold": 0},
        tables={"problem_files_table": md_table(bad, ("file", "status", "message"))} if bad else None,
        severity=dg.AssetCheckSeverity.WARN,
    )


@dg.asset_check(
    asset="raw_events",
    pool=WAREHOUSE_POOL,
    description="Every landing file could be read whole (rejected, damaged or empty files are named with the reason).",
)
def raw_events_files_readable(context, duckdb: DuckDBResource, mlflow: MlflowTracker):
    return _files_check(context, "events", duckdb, mlflow, "raw_events_files_readable")


@dg.asset_check(asset="raw_items", pool=WAREHOUSE_POOL, description="Every item catalog file could be read whole.")
def raw_items_files_readable(context, duckdb: DuckDBResource, mlflow: MlflowTracker):
    return _files_check(context, "items", duckdb, mlflow, "raw_items_files_readable")


def _lines_check(context, kind: str, duckdb, mlflow, check: str):
    return audit_check(
        context,
        duckdb,
        mlflow,
        "audit_file_lines",
        check,
        "files",
        ("file", "format", "physical_lines", "rows_loaded", "raw_rows"),
        params={"kind": kind},
    )


# One check per raw table, each on the files its asset loaded, so the incremental item job (which
# materializes raw_items, not raw_events) audits the item files it ingests.
@dg.asset_check(
    asset="raw_events",
    pool=WAREHOUSE_POOL,
    blocking=True,
    description="Each loaded event file has exactly one raw row per physical data line.",
)
def raw_file_lines_accounted(context, duckdb: DuckDBResource, mlflow: MlflowTracker):
    return _lines_check(context, "events", duckdb, mlflow, "raw_file_lines_accounted")


@dg.asset_check(
    asset="raw_items",
    pool=WAREHOUSE_POOL,
    blocking=True,
    description="Each loaded item catalog file has exactly one raw row per physical data line.",
)
def raw_item_file_lines_accounted(context, duckdb: DuckDBResource, mlflow: MlflowTracker):
    return _lines_check(context, "items", duckdb, mlflow, "raw_item_file_lines_accounted")
