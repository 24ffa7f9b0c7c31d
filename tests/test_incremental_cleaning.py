"""Events are cleaned file by file: a pass after a new landing file cleans only that file's rows,
against what is already clean, and gives the same tables as cleaning every file at once
(models/clean/cleaning.py). The cross-file rules are what could break: a copy of a row kept from
an earlier file must count as its duplicate, an event_id already clean with another content must
lose, a late file for an old day must land in that day."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.clean.checks import clean_interactions_expectations, event_file_accounting, event_row_accounting
from assets.clean.clean_interactions import clean_events as clean_events_asset
from assets.ingest.raw_events import raw_events
from models.clean.cleaning import clean_events
from models.clean.rules import CleaningRules
from orchestration.resources import build_resources
from tests.conftest import HEADER, accounted, ingest_events, write

# one clock for every pass, so a full re-clean and the passes it is compared with judge
# "implausibly far in the future" alike
PARAMS = CleaningRules().sql_params()

# the history: e2 twice in the file (one kept, one duplicate), e3 with two contents (the first
# wins, the second is conflicting_event_id), a row without event_id, a bad timestamp
DAY_1 = HEADER + (
    "e1,u1,i1,click,2024-01-01T10:00:00Z,\n"
    "e2,u1,i2,like,2024-01-01T11:00:00Z,\n"
    "e2,u1,i2,like,2024-01-01T11:00:00Z,\n"
    "e3,u2,i1,click,2024-01-01T12:00:00Z,\n"
    "e3,u2,i9,click,2024-01-01T12:00:00Z,\n"
    ",u3,i3,view,2024-01-01T13:00:00Z,\n"
    "e4,u3,i4,click,not-a-time,\n"
)
# the next day, and every way it can meet the history: a copy of a row kept from day 1 (e1), a
# copy of a row without event_id, a third copy of e2, e3's losing content again and a new
# content for e3 (both lose to day 1's), a clean id e1 with another content (loses), a new id
# with two contents inside the file (e6: the first wins), a new duplicate pair (e7), a bad row
DAY_2 = HEADER + (
    "e1,u1,i1,click,2024-01-01T10:00:00Z,\n"
    ",u3,i3,view,2024-01-01T13:00:00Z,\n"
    "e2,u1,i2,like,2024-01-01T11:00:00Z,\n"
    "e3,u2,i9,click,2024-01-01T12:00:00Z,\n"
    "e3,u2,i8,click,2024-01-01T12:00:00Z,\n"
    "e1,u9,i1,click,2024-01-02T10:00:00Z,\n"
    "e5,u1,i5,rating,2024-01-02T11:00:00Z,4\n"
    "e6,u4,i1,click,2024-01-02T12:00:00Z,\n"
    "e6,u4,i2,click,2024-01-02T12:00:00Z,\n"
    "e7,u5,i1,like,2024-01-02T13:00:00Z,\n"
    "e7,u5,i1,like,2024-01-02T13:00:00Z,\n"
    "e8,u5,i2,rating,2024-01-02T14:00:00Z,11\n"
)
# a file that lands late, for day 1: a new event of that day, a copy of day 2's e7, and e6's
# losing content
LATE_DAY_1 = HEADER + "".join(
    [
        "e9,u6,i3,click,2024-01-01T09:00:00Z,\n",
        "e7,u5,i1,like,2024-01-02T13:00:00Z,\n",
        "e6,u4,i2,click,2024-01-02T12:00:00Z,\n",
    ]
)

TABLES = {
    "clean_interactions": "SELECT * FROM clean_interactions ORDER BY source_file, line",
    "quarantined_events": "SELECT * FROM quarantined_events ORDER BY source_file, line",
    "cleaned_event_files": """SELECT path, raw_rows, clean_rows, duplicate_rows, quarantined_rows
                              FROM cleaned_event_files ORDER BY path""",
}


def contents(con) -> dict[str, list[tuple]]:
    return {name: con.execute(q).fetchall() for name, q in TABLES.items()}


def cleaned_at_once(tmp_path: Path, files: dict[str, str]) -> dict[str, list[tuple]]:
    """The tables of a fresh warehouse that ingests the files in the same order and cleans them in
    one pass."""
    landing = tmp_path / "at_once" / "landing"
    landing.mkdir(parents=True)
    with duckdb.connect(str(tmp_path / "at_once" / "warehouse.duckdb")) as con:
        for rel, text in files.items():
            write(landing, rel, text)
            ingest_events(con, landing)
        assert clean_events(con, PARAMS).mode == "full"
        return contents(con)


def test_a_new_file_is_cleaned_alone_and_the_tables_equal_a_full_clean(con, landing, tmp_path):
    write(landing, "events/day-1.csv", DAY_1)
    ingest_events(con, landing)
    first = clean_events(con, PARAMS)
    assert (first.mode, [f.path for f in first.files]) == ("full", ["events/day-1.csv"])

    write(landing, "events/day-2.csv", DAY_2)
    ingest_events(con, landing)
    second = clean_events(con, PARAMS)
    # only the new file's 12 rows were typed and decided
    assert (second.mode, second.batch) == ("incremental", 2)
    assert [(f.path, f.raw_rows) for f in second.files] == [("events/day-2.csv", 12)]
    # day 2: kept e5, e6 (first content), e7 (once) = 3; duplicates: e1, the id-less row, e2, the
    # second e7 = 4; quarantined: e3 twice, e1's other content, e6's second content, e8 = 5
    (f,) = second.files
    assert (f.clean_rows, f.duplicate_rows, f.quarantined_rows) == (3, 4, 5)
    kept = dict(con.execute("SELECT coalesce(event_id, '-'), duplicate_count FROM clean_interactions").fetchall())
    assert kept == {"e1": 1, "e2": 2, "e3": 0, "-": 1, "e5": 0, "e6": 0, "e7": 1}
    assert con.execute("SELECT source_file FROM clean_interactions WHERE event_id = 'e1'").fetchall() == [
        ("events/day-1.csv",)
    ]  # the kept copy is the earlier file's
    assert accounted(con)[0] == accounted(con)[1] == 19

    incremental = contents(con)
    assert incremental == cleaned_at_once(tmp_path, {"events/day-1.csv": DAY_1, "events/day-2.csv": DAY_2})
    # and the same warehouse cleaned again in full gives the same tables
    assert clean_events(con, PARAMS, full=True).mode == "full"
    assert contents(con) == incremental


def test_a_late_file_for_an_old_day_updates_that_day(con, landing, tmp_path):
    files = {"events/day-1.csv": DAY_1, "events/day-2.csv": DAY_2}
    for rel, text in files.items():
        write(landing, rel, text)
        ingest_events(con, landing)
        clean_events(con, PARAMS)
    write(landing, "events/late/day-1.csv", LATE_DAY_1)
    ingest_events(con, landing)
    late = clean_events(con, PARAMS)
    assert late.mode == "incremental"
    assert [(f.path, f.clean_rows, f.duplicate_rows, f.quarantined_rows) for f in late.files] == [
        ("events/late/day-1.csv", 1, 1, 1)
    ]
    day_1 = con.execute(
        "SELECT event_id FROM clean_interactions WHERE ts::DATE = DATE '2024-01-01' AND event_id IS NOT NULL ORDER BY 1"
    ).fetchall()
    assert day_1 == [("e1",), ("e2",), ("e3",), ("e9",)]
    assert contents(con) == cleaned_at_once(tmp_path, {**files, "events/late/day-1.csv": LATE_DAY_1})


def test_nothing_new_cleans_nothing_and_a_replaced_file_or_new_rules_clean_everything(con, landing):
    write(landing, "events/day-1.csv", DAY_1)
    write(landing, "events/day-2.csv", DAY_2)
    ingest_events(con, landing)
    clean_events(con, PARAMS)
    before = contents(con)
    idle = clean_events(con, PARAMS)
    assert (idle.mode, idle.files) == ("incremental", []) and contents(con) == before

    # a rule changed: every file again, by the new rule (ratings up to 20: e8's 11 is clean now)
    wider = CleaningRules(rating_max=20.0).sql_params()
    rerun = clean_events(con, wider)
    assert rerun.mode == "full" and "rules" in rerun.why and len(rerun.files) == 2
    assert con.execute("SELECT count(*) FROM clean_interactions WHERE event_id = 'e8'").fetchall() == [(1,)]

    # day 2 rewritten without its copies of day 1: its old rows are gone, so everything again
    write(landing, "events/day-2.csv", HEADER + "e10,u1,i1,click,2024-01-02T10:00:00Z,\n")
    ingest_events(con, landing)
    replaced = clean_events(con, wider)
    assert replaced.mode == "full" and "events/day-2.csv" in replaced.why
    raw, placed = accounted(con)
    assert raw == placed == 8
    assert con.execute("SELECT duplicate_count FROM clean_interactions WHERE event_id = 'e1'").fetchall() == [(0,)]


def test_a_failing_pass_leaves_the_tables_as_they_were(con, landing, monkeypatch):
    import models.clean.cleaning as cleaning

    write(landing, "events/day-1.csv", DAY_1)
    ingest_events(con, landing)
    clean_events(con, PARAMS)
    before = contents(con)
    write(landing, "events/day-2.csv", DAY_2)
    ingest_events(con, landing)
    real_run_sql = cleaning.run_sql

    def fail_at_the_ledger(c, name, params=None):
        if name == "cleaned_event_files_batch":
            raise RuntimeError("disk full")
        return real_run_sql(c, name, params)

    monkeypatch.setattr(cleaning, "run_sql", fail_at_the_ledger)
    with pytest.raises(RuntimeError, match="disk full"):
        clean_events(con, PARAMS)
    assert contents(con) == before  # no duplicate counted, no row appended
    monkeypatch.setattr(cleaning, "run_sql", real_run_sql)
    assert clean_events(con, PARAMS).files[0].path == "events/day-2.csv"


# --- the same through Dagster ---------------------------------------------------------------


def _materialize(home: Path, instance):
    return dg.materialize(
        [raw_events, clean_events_asset, event_row_accounting, event_file_accounting, clean_interactions_expectations],
        resources=build_resources(home),
        instance=instance,
        raise_on_error=False,
    )


def test_a_second_run_after_a_new_file_cleans_and_validates_only_that_file(tmp_path):
    home = tmp_path
    write(home / "landing", "events/day-1.csv", DAY_1)
    instance = dg.DagsterInstance.ephemeral()
    first = _materialize(home, instance)
    assert first.success

    write(home / "landing", "events/day-2.csv", DAY_2)
    second = _materialize(home, instance)
    assert second.success
    meta = {m.asset_key.to_user_string(): m.metadata for m in second.asset_materializations_for_node("clean_events")}
    clean = meta["clean_interactions"]
    assert clean["cleaning_mode"].value == "incremental"
    assert (clean["files_cleaned"].value, clean["new_raw_rows"].value) == (1, 12)
    assert "events/day-2.csv" in clean["cleaned_files_table"].value
    assert "events/day-1.csv" not in clean["cleaned_files_table"].value
    checks = {e.check_name: e for e in second.get_asset_check_evaluations()}
    assert checks["event_row_accounting"].passed and checks["event_file_accounting"].passed
    gx = checks["clean_interactions_expectations"]
    assert gx.passed
    # validated: day 2's 3 kept rows, not the table's 7
    assert (gx.metadata["rows_validated"].value, gx.metadata["rows_total"].value) == (3, 3)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM clean_interactions").fetchall() == [(7,)]


def test_the_file_accounting_check_names_a_file_whose_rows_went_missing(tmp_path):
    home = tmp_path
    write(home / "landing", "events/day-1.csv", DAY_1)
    instance = dg.DagsterInstance.ephemeral()
    assert _materialize(home, instance).success
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        con.execute("DELETE FROM quarantined_events WHERE reason = 'unparseable_timestamp'")
    again = dg.materialize(
        [raw_events, clean_events_asset, event_file_accounting],
        resources=build_resources(home),
        instance=instance,
        raise_on_error=False,
        selection=dg.AssetSelection.checks(event_file_accounting),
    )
    (evaluation,) = again.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["offending_files"].value == 1
    assert "events/day-1.csv" in evaluation.metadata["offending_files_table"].value
