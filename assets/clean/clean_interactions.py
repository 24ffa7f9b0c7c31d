"""clean_interactions and quarantined_events: one pass over raw_events, two relations.

They come from one step because both read the same typed rows (sql/typed_events.sql) and the
same duplicate / conflict resolution (sql/event_conflicts.sql); every raw row lands in exactly
one of them or is counted as an exact duplicate.

A pass cleans only the event files not cleaned yet, against what is already clean, with the
same result as cleaning every file again (models/clean/cleaning.py says when it does re-clean
everything, and `full_refresh` asks for it). The materialization shows the mode, why, and what
became of each file's rows (`cleaned_files_table`); `cleaned_event_files` in the warehouse holds
that for every file.

The step can be subset (`--select '*vocabularies'` selects clean_interactions alone): the one
pass still writes both tables, since splitting it would resolve duplicates twice, and it records
a materialization for each selected asset only; the log says when the other table was rewritten
outside the selection.

With one partition per landing file (orchestration/partitions.py) the pass is the same one (every
ingested file not cleaned yet, in ingest order: a file's outcome depends on every earlier file),
run once for all the run's partitions (`BackfillPolicy.single_run()`); each partition's
materialization then carries its file's row accounting from `cleaned_event_files`.
"""

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._config import to_library
from assets.clean.config import EventCleaningConfig
from assets.reporting import figures_metadata, log_figures, md_table, table_metadata
from orchestration.versions import WAREHOUSE_POOL, code_version
from models.clean.cleaning import (
    EventCleaning,
    EventCleaningRun,
    FileCleaning,
    cleaned_files,
    clean_events as run_cleaning,
)
from models.ingest.landing import EVENTS
from orchestration.partitions import partition_files
from models.clean.rules import CleaningRules, params_to_json
from orchestration.resources import MlflowTracker

VERSION = code_version(__name__)
RULES_KEY = "cleaning_params"


def build_clean_events(partitions_def: dg.PartitionsDefinition | None = None) -> dg.AssetsDefinition:
    """The cleaning step, unpartitioned or one partition per landing file (orchestration/partitions.py)."""
    specs = [
        dg.AssetSpec(
            "clean_interactions",
            deps=["raw_events"],
            kinds={"duckdb"},
            owners=["team:recsys"],
            tags={"layer": "silver"},
            code_version=VERSION,
            description="Typed, trimmed, deduplicated events with positive/negative flags.",
            partitions_def=partitions_def,
        ),
        dg.AssetSpec(
            "quarantined_events",
            deps=["raw_events"],
            kinds={"duckdb"},
            owners=["team:recsys"],
            tags={"layer": "silver"},
            code_version=VERSION,
            description="Raw event rows that broke a rule, with reason code, file and line.",
            partitions_def=partitions_def,
        ),
    ]
    return dg.multi_asset(
        name="clean_events",
        specs=specs,
        pool=WAREHOUSE_POOL,
        can_subset=True,
        # partitions are cleaned in file order, several in one pass (one transaction)
        backfill_policy=dg.BackfillPolicy.single_run() if partitions_def else None,
    )(_clean_events)


def _clean_events(
    context: dg.AssetExecutionContext, config: EventCleaningConfig, duckdb: DuckDBResource, mlflow: MlflowTracker
):
    files = partition_files(context)
    rules = to_library(config, CleaningRules)
    params = rules.sql_params()
    with duckdb.get_connection() as con:
        cleaning = run_cleaning(con, params, full=to_library(config, EventCleaningRun).full_refresh)
        sql = cleaning.sql
        raw, clean, dups, pos, neg, users, items = con.execute(
            """SELECT (SELECT count(*) FROM raw_events), count(*), coalesce(sum(duplicate_count), 0),
                      count(*) FILTER (WHERE is_positive), count(*) FILTER (WHERE is_negative),
                      count(DISTINCT user_id), count(DISTINCT item_id) FROM clean_interactions"""
        ).fetchall()[0]
        by_reason = con.execute(
            "SELECT reason, count(*) AS n FROM quarantined_events GROUP BY reason ORDER BY n DESC, reason"
        ).fetchall()
        examples = con.execute(
            """SELECT reason, source_file, line, coalesce(raw_line, concat_ws(',', user_id, item_id, event_type, timestamp_raw, value_raw))
               FROM (SELECT *, row_number() OVER (PARTITION BY reason ORDER BY source_file, line) AS k FROM quarantined_events)
               WHERE k <= 3 ORDER BY reason, k"""
        ).fetchall()
        tables = {name: table_metadata(con, name) for name in ("clean_interactions", "quarantined_events")}
        ledger = cleaned_files(con, [f"{EVENTS.name}/{f}" for f in files]) if files is not None else {}
    quarantined = sum(n for _, n in by_reason)
    figures = {
        "raw_rows": raw,
        "clean_rows": clean,
        "duplicate_rows": int(dups),
        "quarantined_rows": quarantined,
        "positive_rows": pos,
        "negative_rows": neg,
        "users": users,
        "items": items,
        "quarantine_share": quarantined / raw if raw else 0.0,
        "files_cleaned": len(cleaning.files),
        "new_raw_rows": cleaning.raw_rows,
    }
    # partitioned, each partition's event carries its own file's row (this table, on every one of
    # them, would grow with the files of the run on each)
    files_md = (
        {}
        if files is not None
        else {
            "cleaned_files_table": md_table(
                [(f.path, f.raw_rows, f.clean_rows, f.duplicate_rows, f.quarantined_rows) for f in cleaning.files],
                ("file", "raw", "clean", "duplicates", "quarantined"),
            )
        }
    )
    pass_meta = {
        "cleaning_mode": dg.MetadataValue.text(cleaning.mode),
        "cleaning_why": dg.MetadataValue.text(cleaning.why),
        "cleaning_batch": dg.MetadataValue.int(cleaning.batch),
    }
    reasons = {f"quarantined.{r}": n for r, n in by_reason}
    context.log.info(
        f"cleaned {cleaning.raw_rows:,} raw rows of {len(cleaning.files)} file(s) ({cleaning.mode}: {cleaning.why}); "
        f"clean_interactions: {clean:,} clean, {dups:,} duplicates, {quarantined:,} quarantined of {raw:,} raw rows"
    )
    log_figures(
        context,
        mlflow,
        "clean_interactions",
        {**figures, **reasons},
        params={"positive_types": ",".join(rules.positive_types()), "min_positive_rating": rules.min_positive_rating},
    )
    reason_md = md_table(by_reason, ("reason", "rows"))
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    if files is not None:
        _partition_metadata(context, cleaning, files, ledger, selected)
    for name in sorted({"clean_interactions", "quarantined_events"} - selected):
        context.log.info(f"{name}: rewritten by the same pass, not selected, so no materialization is recorded")
    if "clean_interactions" in selected:
        yield dg.MaterializeResult(
            asset_key="clean_interactions",
            metadata=figures_metadata(
                figures,
                sql={k: v for k, v in sql.items() if not k.startswith("quarantined_events")},
                tables={"quarantine_by_reason": reason_md, **files_md},
            )
            | pass_meta
            | tables["clean_interactions"]
            # the rules this table was cleaned by: its expectation check validates against them
            | {RULES_KEY: dg.MetadataValue.json(params_to_json(params))},
        )
    if "quarantined_events" in selected:
        yield dg.MaterializeResult(
            asset_key="quarantined_events",
            metadata=figures_metadata(
                {"quarantined_rows": quarantined, **reasons},
                sql={k: v for k, v in sql.items() if k.startswith("quarantined_events")},
                tables={
                    "quarantine_by_reason": reason_md,
                    "examples": md_table(examples, ("reason", "file", "line", "raw")),
                    **files_md,
                },
            )
            | pass_meta
            | tables["quarantined_events"],
        )


def _partition_metadata(
    context, cleaning: EventCleaning, files: list[str], ledger: dict[str, FileCleaning], selected: set[str]
) -> None:
    """Each partition's row accounting, from the ledger (whichever pass cleaned its file): what
    the UI's partitions view shows, `dagster/row_count` the file's clean (or quarantined) rows."""
    if missing := [f for f in files if f"{EVENTS.name}/{f}" not in ledger]:
        raise dg.Failure(
            f"{len(missing)} partition(s) name a file the ingest has not read: {', '.join(missing[:5])}; "
            "materialize raw_events for the same partitions first (the sensor's runs select both)"
        )
    named = {f"{EVENTS.name}/{f}" for f in files}
    if outside := [f.path for f in cleaning.files if f.path not in named]:
        context.log.warning(
            f"this {cleaning.mode} pass also cleaned {len(outside)} file(s) outside the run's partitions "
            f"({', '.join(outside[:5])}): their rows are in the tables and their figures in cleaned_event_files; "
            "their partitions keep their last materialization until they are materialized again"
        )
    for key in files:
        f = ledger[f"{EVENTS.name}/{key}"]
        figures = {
            "file_raw_rows": dg.MetadataValue.int(f.raw_rows),
            "file_clean_rows": dg.MetadataValue.int(f.clean_rows),
            "file_duplicate_rows": dg.MetadataValue.int(f.duplicate_rows),
            "file_quarantined_rows": dg.MetadataValue.int(f.quarantined_rows),
            "file_cleaned_by_pass": dg.MetadataValue.int(f.batch),
        }
        rows = {"clean_interactions": f.clean_rows, "quarantined_events": f.quarantined_rows}
        for asset in sorted(selected):
            context.add_asset_metadata(
                {**figures, "dagster/row_count": dg.MetadataValue.int(rows[asset])}, asset_key=asset, partition_key=key
            )


clean_events = build_clean_events()
