"""Duplicate and conflict rules, positive mapping and item cleaning on hand-written rows."""

from __future__ import annotations

from models.clean.rules import CleaningRules
from models.clean.cleaning import clean_items
from tests.conftest import HEADER, accounted, clean_events, ingest_events, ingest_items, reasons, write


def test_exact_duplicates_collapse_and_are_counted_across_files_and_formats(con, landing):
    # the same event three times: twice in a.csv (once with a +02:00 offset = the same instant),
    # once in b.jsonl; one clean row with duplicate_count 2
    write(
        landing,
        "events/a.csv",
        HEADER + "e1,u1,i1,click,2024-01-01T10:00:00Z,\ne1,u1,i1,click,2024-01-01T12:00:00+02:00,\n",
    )
    write(
        landing,
        "events/b.jsonl",
        '{"event_id":"e1","user_id":" u1 ","item_id":"i1","event_type":"click","timestamp":1704103200}\n',
    )
    ingest_events(con, landing)
    clean_events(con)
    assert con.execute("SELECT event_id, source_file, line, duplicate_count FROM clean_interactions").fetchall() == [
        ("e1", "events/a.csv", 2, 2)
    ]
    assert reasons(con) == []
    assert accounted(con) == (3, 3)


def test_conflicting_event_id_keeps_the_first_version_and_quarantines_every_copy_of_the_others(con, landing):
    write(
        landing,
        "events/a.csv",
        HEADER + "e1,u1,i1,click,1704103200,\n"  # first version: kept
        "e1,u1,i2,click,1704103200,\n"  # same id, other item
        "e1,u1,i2,click,1704103200,\n"  # ...and its copy
        "e2,u2,i1,like,1704103200,\n",
    )
    ingest_events(con, landing)
    clean_events(con)
    assert con.execute("SELECT event_id, item_id FROM clean_interactions ORDER BY event_id").fetchall() == [
        ("e1", "i1"),
        ("e2", "i1"),
    ]
    assert reasons(con) == [("events/a.csv", 3, "conflicting_event_id"), ("events/a.csv", 4, "conflicting_event_id")]
    assert accounted(con) == (4, 4)


def test_events_without_event_id_deduplicate_on_content(con, landing):
    write(
        landing,
        "events/a.csv",
        "user_id,item_id,event_type,timestamp\nu1,i1,click,1704103200\n"
        "u1,i1,click,1704103200\nu1,i1,click,1704103201\n",
    )
    ingest_events(con, landing)
    clean_events(con)
    assert con.execute("SELECT count(*), sum(duplicate_count) FROM clean_interactions").fetchall() == [(2, 1)]


def test_positive_and_negative_mapping_is_configuration(con, landing):
    write(
        landing,
        "events/a.csv",
        HEADER
        + "\n".join(
            [
                "e1,u1,i1,impression,1704103200,",
                "e2,u1,i1,click,1704103201,",
                "e3,u1,i2,not_interested,1704103202,",
                "e4,u1,i3,rating,1704103203,2",
                "e5,u1,i4,rating,1704103204,4.5",
            ]
        )
        + "\n",
    )
    ingest_events(con, landing)
    clean_events(con)
    flags = lambda: con.execute(
        "SELECT event_id, is_positive, is_negative FROM clean_interactions ORDER BY event_id"
    ).fetchall()
    # default: every rating is positive, impressions are neutral, not_interested is negative
    assert flags() == [
        ("e1", False, False),
        ("e2", True, False),
        ("e3", False, True),
        ("e4", True, False),
        ("e5", True, False),
    ]
    clean_events(con, CleaningRules(min_positive_rating=3.5, neutral_types=["impression", "click"]))
    # a low rating becomes negative feedback, and clicks stop counting as positives
    assert flags() == [
        ("e1", False, False),
        ("e2", False, False),
        ("e3", False, True),
        ("e4", False, True),
        ("e5", True, False),
    ]


def test_items_latest_version_wins_and_bad_rows_are_quarantined(con, landing):
    write(
        landing,
        "items/a.csv",
        "item_id,title,categories,created_at,price\n"
        "i1,Old Title,Drama,2020-01-01,3\n"
        "i2,Toy Story (1995),Animation|Children| comedy ,,\n"
        ",No id,Drama,,\n"
        "i3,Bad date,Drama,yesterday-ish,\n",
    )
    write(
        landing,
        "items/b.jsonl",
        '{"item_id":"i1","title":"New Title","categories":["Drama","Crime"],"created_at":"2021-05-05T00:00:00Z"}\n',
    )
    ingest_items(con, landing)
    clean_items(con, CleaningRules().sql_params())
    rows = con.execute(
        "SELECT item_id, title, categories, year, superseded_count, attributes FROM clean_items ORDER BY item_id"
    ).fetchall()
    assert rows == [
        ("i1", "New Title", ["crime", "drama"], None, 1, None),
        ("i2", "Toy Story (1995)", ["animation", "children", "comedy"], 1995, 0, '{"price":null}'),
    ]
    assert con.execute("SELECT line, reason FROM quarantined_items ORDER BY line").fetchall() == [
        (4, "missing_item_id"),
        (5, "unparseable_created_at"),
    ]
    raw, clean, superseded, quarantined, unaccounted = con.execute(
        open("sql/audit_item_accounting.sql").read()
    ).fetchall()[0]
    assert (raw, unaccounted) == (5, 0)
