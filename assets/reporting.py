"""What every asset and check does at its end: the same figures to Dagster metadata and MLflow."""

from __future__ import annotations

import math

import dagster as dg

from orchestration.resources import CHAMPION
from orchestration.versions import content_digest


# A challenger that does not beat what serves today is a normal outcome, not a broken run: the
# promotion checks fail as warnings and the promote assets promote nothing (`not_promoted`). Checks
# on data and serving artifacts (row accounting, leakage, index recall) stay ERROR and block.
PROMOTION_GATE = dg.AssetCheckSeverity.WARN


def md_table(rows: list[tuple], header: tuple[str, ...], limit: int = 50) -> str:
    """A Markdown table of at most `limit` rows (the rest summarised), for metadata."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows[:limit]:
        lines.append("| " + " | ".join("" if v is None else str(v).replace("|", "\\|")[:80] for v in r) + " |")
    if len(rows) > limit:
        lines.append(f"| … {len(rows) - limit} more | " + " | " * (len(header) - 1))
    return "\n".join(lines)


def content_version(context, *content) -> dg.DataVersion:
    """An asset's data version from what it holds (digests of its rows or files) and the code
    that wrote it, instead of Dagster's default (a new version per run): a run that changes
    nothing keeps the version, so nothing downstream turns stale ("Upstream data") for it."""
    code = context.assets_def.code_versions_by_key.get(context.asset_key) or ""
    return dg.DataVersion(content_digest(code, *content))


def table_digest(con, table: str) -> str:
    """A digest of a warehouse table's rows (order-free: a sum of row hashes, and the count)."""
    n, total = con.table(table).aggregate("count(*), sum(hash(*columns(*))::HUGEINT)").fetchall()[0]
    return f"{n}:{total}"


def shown(v: float) -> float:
    """A figure as the UI shows it: four significant digits, the integer part never cut
    (0.17979787649498838 -> 0.1798, 1234.567 -> 1235.0, 3e-05 stays). MLflow keeps every digit."""
    if not math.isfinite(v) or v == 0:
        return v
    return round(v, max(0, 3 - math.floor(math.log10(abs(v)))))


def figures_metadata(figures: dict, sql: dict[str, str] | None = None, tables: dict[str, str] | None = None) -> dict:
    """Figures as typed Dagster metadata: floats shown to four significant digits, a whole float
    (an epoch count such as 2.0) as an integer."""
    meta: dict = {}
    for k, v in figures.items():
        if isinstance(v, bool):
            meta[k] = dg.MetadataValue.bool(v)
        elif isinstance(v, int):
            meta[k] = dg.MetadataValue.int(v)
        elif isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
            meta[k] = dg.MetadataValue.int(int(v))
        elif isinstance(v, float):
            meta[k] = dg.MetadataValue.float(shown(v))
        elif v is not None:
            meta[k] = dg.MetadataValue.text(str(v))
    for name, text in (tables or {}).items():
        meta[name] = dg.MetadataValue.md(text)
    for name, text in (sql or {}).items():
        meta[f"sql/{name}"] = dg.MetadataValue.md(f"```sql\n{text.strip()}\n```")
    return meta


def log_figures(context, mlflow, asset: str, figures: dict, params: dict | None = None) -> None:
    numeric = {k: float(v) for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, str)}
    run_id = mlflow.log(context, asset, numeric, params=params)
    context.log.info(f"{asset}: logged {len(numeric)} figures to MLflow run {run_id}")


def promotion_result(
    context, mlflow, registered_model: str, number, created: bool, version_key: str, version: str, figures: dict
) -> dg.MaterializeResult:
    """How every promote asset ends once the registry's alias moved: one log line, the registered
    version to MLflow, and the metadata the UI shows (`figures` after the registry's own fields)."""
    context.log.info(
        f"{registered_model} version {number} ({version}) is now @{CHAMPION}"
        + ("" if created else " (already registered)")
    )
    asset = context.asset_key.to_user_string()
    mlflow.log(context, asset, {"registered_version": number, "promoted": 1.0}, params={version_key: version})
    return dg.MaterializeResult(
        metadata=figures_metadata(
            {
                "registered_model": registered_model,
                "registered_version": number,
                "alias": CHAMPION,
                version_key: version,
                "champion_uri": f"models:/{registered_model}@{CHAMPION}",
                "promoted": True,
                "new_version": created,
                **figures,
            }
        )
    )


def not_promoted(context, mlflow, registered_model: str, version_key: str, version: str, rule: str, figures: dict):
    """How every promote asset ends when its challenger lost to what serves: a normal outcome,
    not a failure. One warning line, `promoted = 0` to MLflow, and an observation on the promote
    asset that the UI shows (the challenger, the rule it missed, the champion that stays); the
    asset yields no materialization, so the steps below it are skipped and everything that serves
    keeps serving the current champion (or, with none yet, the family stays unserved)."""
    champion = mlflow.champion(registered_model=registered_model)
    stays = champion.tags.get("checkpoint") if champion is not None else None
    context.log.warning(
        f"{registered_model}: {version_key} {version} NOT promoted ({rule}); "
        + (f"version {champion.version} ({stays}) stays @{CHAMPION}" if champion else f"no @{CHAMPION} yet")
    )
    asset = context.asset_key.to_user_string()
    mlflow.log(context, asset, {"promoted": 0.0}, params={f"challenger_{version_key}": version})
    return dg.AssetObservation(
        asset_key=context.asset_key,
        metadata=figures_metadata(
            {
                "promoted": False,
                "registered_model": registered_model,
                f"challenger_{version_key}": version,
                "rule_not_met": rule,
                "champion_version": int(champion.version) if champion else None,
                f"champion_{version_key}": stays or f"none: no {registered_model}@{CHAMPION} yet",
                **figures,
            }
        ),
    )


def check_result(
    context,
    mlflow,
    check: str,
    passed: bool,
    figures: dict,
    tables: dict[str, str] | None = None,
    severity=dg.AssetCheckSeverity.ERROR,
    asset_key=None,
) -> dg.AssetCheckResult:
    mlflow.log(
        context,
        f"check/{check}",
        {"passed": float(passed), **{k: float(v) for k, v in figures.items() if isinstance(v, (int, float))}},
    )
    return dg.AssetCheckResult(
        passed=passed, severity=severity, asset_key=asset_key, metadata=figures_metadata(figures, tables=tables)
    )


def audit_check(
    context,
    duckdb,
    mlflow,
    audit: str,
    check: str,
    what: str,
    header: tuple[str, ...],
    severity=dg.AssetCheckSeverity.ERROR,
    params: dict | None = None,
) -> dg.AssetCheckResult:
    """Run sql/<audit>.sql (with bound `params`), which returns the offending rows: zero rows =
    pass. The metadata shows their count next to the threshold (0) and the first of them."""
    from models.sql import query

    with duckdb.get_connection() as con:
        bad = query(con, audit, params)
    return check_result(
        context,
        mlflow,
        check,
        not bad,
        {f"offending_{what}": len(bad), "threshold": 0},
        tables={f"offending_{what}_table": md_table(bad, header)} if bad else None,
        severity=severity,
    )


def expectations_check(
    context,
    duckdb,
    mlflow,
    config,
    check: str,
    select: str,
    expectations: list,
    params: dict | None = None,
    more_figures=None,
    severity=dg.AssetCheckSeverity.ERROR,
) -> dg.AssetCheckResult:
    """Run Great Expectations `expectations` on the rows of `select` (the whole table up to
    `config.max_rows`, a sample seeded by `config.seed` above it; models/clean/gx.py). The
    metadata counts the failed expectations against the threshold (0), says how many rows were
    validated and whether they were a sample, and tables every expectation with its unexpected
    count. `more_figures(con)` adds figures read on the same warehouse connection."""
    from models.clean.gx import load_frame, validate

    with duckdb.get_connection() as con:
        df, total, sampled = load_frame(con, select, params, config.max_rows, config.seed)
        extra = more_figures(con) if more_figures else {}
    out = validate(df, expectations, total, sampled)
    figures = {
        "expectations": len(out.results),
        "failed_expectations": sum(not r[2] for r in out.results),
        "threshold_failed": 0,
        "rows_validated": out.rows_validated,
        "rows_total": out.rows_total,
        "sampled": out.sampled,
        **extra,
    }
    return check_result(
        context,
        mlflow,
        check,
        out.success,
        figures,
        tables={
            "expectations_table": md_table(out.results, ("expectation", "column", "passed", "unexpected", "observed"))
        },
        severity=severity,
    )


def table_metadata(con, table: str) -> dict:
    """`dagster/row_count`, `dagster/column_schema` and `dagster/table_name` of a warehouse table,
    the keys the Dagster UI reads for its row-count and schema panels; a column's description is
    the note its line carries in sql/<table>.sql (models/sql.py `column_notes`)."""
    from models.sql import column_notes

    rel = con.table(table)  # the relational API: no SQL text built from the name
    rows = rel.aggregate("count(*)").fetchall()[0][0]
    database, schema = con.execute("SELECT current_database(), current_schema()").fetchall()[0]
    notes = column_notes(table)
    columns = [
        dg.TableColumn(name=name, type=str(dtype), description=notes.get(name))
        for name, dtype in zip(rel.columns, rel.dtypes)
    ]
    return {
        "dagster/row_count": dg.MetadataValue.int(int(rows)),
        "dagster/column_schema": dg.MetadataValue.table_schema(dg.TableSchema(columns=columns)),
        "dagster/table_name": dg.MetadataValue.text(f"{database}.{schema}.{table}"),
    }
