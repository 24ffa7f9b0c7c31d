"""The cleaning SQL steps, in order (no Dagster): shared by the assets, the tests and the
benchmarks, so every caller runs exactly what the graph runs.

Events are cleaned file by file. A pass cleans the batch of live landing files that
`cleaned_event_files` does not hold yet (sql/event_batch.sql) against what is already clean:
a content already clean from an earlier file makes the batch's copies exact duplicates of that
row (its duplicate_count grows), an event_id already clean with another content makes the
batch's version a losing one (quarantined as conflicting_event_id), everything else is decided
inside the batch as before. Since a new file always comes after every cleaned file in ingest
order, this gives the same tables as cleaning every file at once (tests/test_incremental_cleaning.py
compares the two), at the cost of the new rows plus one probe of the clean table.

A pass cleans everything again (`full`) when what was cleaned no longer stands:
- the rules or the cleaning SQL differ from those the cleaned files were cleaned by
  (`rules_digest`; `max_timestamp` is left out: "implausibly far in the future" is judged
  against the clock of the pass that cleaned the row, so an event that was in the future when
  it landed stays quarantined),
- a cleaned file was replaced (its content changed: the ingest superseded its rows),
- the tables or the ledger are missing, or the caller asks for it.
One pass is one transaction: a failure leaves the tables as they were.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from models.clean.rules import params_to_json
from models.settings import setting
from models.sql import run_sql, sql_text

# in order; the first three are temp relations of the pass
EVENT_STEPS = (
    "event_batch",
    "typed_events",
    "event_versions",
    "event_conflicts",
    "clean_interactions_duplicates",
    "clean_interactions_batch",
    "quarantined_events_batch",
    "cleaned_event_files_batch",
)
EVENT_TABLES = ("clean_interactions", "quarantined_events", "cleaned_event_files")
ITEM_STEPS = ("typed_items", "clean_items", "quarantined_items")
# judged against the pass's own clock (see above), so not part of what makes a re-clean necessary
CLOCK_PARAMS = ("max_timestamp",)


@dataclass
class EventCleaningRun:
    full_refresh: bool = setting(
        False,
        "Clean every event file again instead of only the files not cleaned yet. Not needed after "
        "a rule or a file changed (that re-cleans everything by itself); a re-clean gives the same "
        "tables, but re-judges future-dated rows against today's clock.",
    )


@dataclass
class FileCleaning:
    path: str
    raw_rows: int
    clean_rows: int
    duplicate_rows: int
    quarantined_rows: int
    batch: int = 0  # the pass that cleaned it


def cleaned_files(con, paths: list[str]) -> dict[str, FileCleaning]:
    """The ledger's record of each of `paths` (relative to landing/) that has been cleaned, by
    whichever pass cleaned it: a partition's figures (orchestration/partitions.py)."""
    rows = con.execute(
        """SELECT path, raw_rows, clean_rows, duplicate_rows, quarantined_rows, batch
           FROM cleaned_event_files WHERE list_contains($p, path) ORDER BY file_id""",
        {"p": paths},
    ).fetchall()
    return {r[0]: FileCleaning(*r) for r in rows}


@dataclass
class EventCleaning:
    mode: str  # full | incremental
    why: str  # what made the pass full, or how many files it cleaned
    batch: int
    files: list[FileCleaning] = field(default_factory=list)
    sql: dict[str, str] = field(default_factory=dict)

    @property
    def raw_rows(self) -> int:
        return sum(f.raw_rows for f in self.files)


def rules_digest(params: dict) -> str:
    """What the cleaned rows depend on: the rules (less the clock) and the SQL that applies them."""
    rules = {k: v for k, v in params_to_json(params).items() if k not in CLOCK_PARAMS}
    text = json.dumps(rules, sort_keys=True) + "".join(sql_text(s) for s in (*EVENT_TABLES, *EVENT_STEPS))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _tables(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary").fetchall()}


def full_clean_reason(con, digest: str) -> str | None:
    """Why the next pass must clean every file again, or None when it can clean only new files."""
    missing = [t for t in EVENT_TABLES if t not in _tables(con)]
    if missing:
        return f"first cleaning ({', '.join(missing)} not built yet)"
    rules = {r[0] for r in con.execute("SELECT DISTINCT rules FROM cleaned_event_files").fetchall()}
    if rules - {digest}:
        return "the cleaning rules or SQL changed since the files were cleaned"
    replaced = con.execute(
        """SELECT c.path FROM cleaned_event_files c
           WHERE c.file_id NOT IN (SELECT file_id FROM ingested_files WHERE kind = 'events' AND status <> 'superseded')
           ORDER BY 1"""
    ).fetchall()
    if replaced:
        names = ", ".join(p for (p,) in replaced[:3]) + (" ..." if len(replaced) > 3 else "")
        return f"{len(replaced)} cleaned file(s) replaced or gone since: {names}"
    return None


def clean_events(con, params: dict, full: bool = False) -> EventCleaning:
    """raw_events -> clean_interactions + quarantined_events + cleaned_event_files, for the
    files not cleaned yet (every file when `full` or when `full_clean_reason` names one)."""
    for ddl in ("ingested_files", "raw_events"):
        run_sql(con, ddl)  # CREATE IF NOT EXISTS: a home with no ingest yet cleans nothing
    digest = rules_digest(params)
    why = "a full re-clean was asked for" if full else full_clean_reason(con, digest)
    mode = "full" if why else "incremental"
    con.execute("BEGIN TRANSACTION")
    try:
        if mode == "full":
            con.execute(" ".join(f"DROP TABLE IF EXISTS {t};" for t in EVENT_TABLES))
        sql = {t: run_sql(con, t) for t in EVENT_TABLES}
        batch = con.execute("SELECT coalesce(max(batch), 0) + 1 FROM cleaned_event_files").fetchall()[0][0]
        step_params = {**params, "batch": batch, "mode": mode, "rules": digest}
        sql |= {name: run_sql(con, name, step_params) for name in EVENT_STEPS}
        rows = con.execute(
            """SELECT path, raw_rows, clean_rows, duplicate_rows, quarantined_rows, batch
               FROM cleaned_event_files WHERE batch = $b ORDER BY file_id""",
            {"b": batch},
        ).fetchall()
        con.execute(
            "DROP TABLE IF EXISTS event_batch; DROP TABLE IF EXISTS typed_events; "
            "DROP TABLE IF EXISTS event_versions; DROP TABLE IF EXISTS event_conflicts"
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    files = [FileCleaning(*r) for r in rows]
    return EventCleaning(mode, why or f"{len(files)} new file(s)", batch, files, sql)


def clean_items(con, params: dict) -> dict[str, str]:
    """raw_items -> clean_items + quarantined_items; returns each statement's SQL."""
    sql = {name: run_sql(con, name, params) for name in ITEM_STEPS}
    con.execute("DROP TABLE IF EXISTS typed_items")
    return sql
