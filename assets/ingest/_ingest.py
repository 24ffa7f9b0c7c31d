"""Shared body of the two ingest assets (raw_events, raw_items)."""

from __future__ import annotations

import dagster as dg

from models.ingest.changes import dump_states, fingerprint
from models.ingest.landing import LandingKind, ingest_folder, ingested
from assets.reporting import content_version, figures_metadata, log_figures, md_table, table_metadata
from models.sql import sql_text

# the metadata key of the ledger's live files (orchestration/sensors.py reads it)
LEDGER_KEY = "ingested_files"


def ingest(context, kind: LandingKind, paths, duckdb, mlflow, only: list[str] | None = None) -> dg.MaterializeResult:
    """Ingest the new files of landing/<kind>/, or the files `only` names (a partitioned run's:
    each partition's materialization then carries its file's status and rows)."""
    with duckdb.get_connection() as con:
        results = ingest_folder(con, paths.landing, kind, log=context.log.info, only=only)
        if only is not None:
            for key, meta in file_metadata(con, kind, only).items():
                context.add_asset_metadata(meta, partition_key=key)
        total, unparseable, files = con.execute(
            f"SELECT count(*), count(parse_error), count(DISTINCT file_id) FROM {kind.table}"
        ).fetchall()[0]
        problems = con.execute(
            "SELECT path, status, message FROM ingested_files WHERE kind = $k AND status IN ('rejected', 'partial', 'empty') ORDER BY path",
            {"k": kind.name},
        ).fetchall()
        table = table_metadata(con, kind.table)
        ledger = ingested(con, kind)
    new = [r for r in results if r.status != "skipped"]
    warnings = [r for r in new if r.status in ("rejected", "partial", "empty")]
    figures = {
        "new_files": len(new),
        "skipped_files": len(results) - len(new),
        "new_rows": sum(r.rows for r in new),
        "new_unparseable_rows": sum(r.parse_errors for r in new),
        "total_rows": int(total),
        "total_unparseable_rows": int(unparseable),
        "files_with_rows": int(files),
        "problem_files": len(problems),
    }
    if not (paths.landing / kind.name).exists():
        context.log.warning(
            f"{paths.landing / kind.name} does not exist: nothing to ingest "
            "(run `towerflow generate` or drop files there)"
        )
    log_figures(context, mlflow, kind.table, figures)
    tables = {
        "new_files_table": md_table(
            [(r.path, r.status, r.reader, r.rows, r.parse_errors, r.message) for r in new],
            ("file", "status", "reader", "rows", "unparseable", "message"),
        )
    }
    if problems:
        tables["problem_files_table"] = md_table(problems, ("file", "status", "message"))
    for r in warnings:
        context.log.warning(r.message)
    # The ledger's live files: what the sensors compare a landing folder with (never calling new
    # what was read), and the table's data version (the same files give the same rows, so a run
    # that read nothing new leaves everything downstream fresh).
    run_wide = {**figures_metadata({}, tables=tables), LEDGER_KEY: dg.MetadataValue.json(dump_states(ledger))}
    if only is not None:
        # a partitioned run writes one materialization per partition, each with this result's
        # metadata: the ledger and the file tables (sized by the files) go once, as an observation
        context.log_event(dg.AssetObservation(asset_key=kind.table, metadata=run_wide))
        run_wide = {}
    return dg.MaterializeResult(
        metadata={**figures_metadata(figures, sql={kind.table: sql_text(kind.table)}), **table, **run_wide},
        data_version=content_version(context, fingerprint(ledger)),
    )


def file_metadata(con, kind: LandingKind, files: list[str]) -> dict[str, dict]:
    """Each file's live ledger record as a partition's metadata (`dagster/row_count`: its raw rows,
    what the UI's partitions view shows)."""
    rows = con.execute(
        """SELECT path, status, reader, rows_loaded, parse_errors, message FROM ingested_files
           WHERE kind = $k AND status <> 'superseded' AND list_contains($p, path)""",
        {"k": kind.name, "p": [f"{kind.name}/{f}" for f in files]},
    ).fetchall()
    return {
        path.removeprefix(f"{kind.name}/"): {
            "dagster/row_count": dg.MetadataValue.int(int(n)),
            "file_status": dg.MetadataValue.text(status),
            "reader": dg.MetadataValue.text(reader),
            "unparseable_rows": dg.MetadataValue.int(int(errors)),
            "file_message": dg.MetadataValue.text(message or ""),
        }
        for path, status, reader, n, errors, message in rows
    }
