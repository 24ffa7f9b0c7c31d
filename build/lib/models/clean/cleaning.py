"""The cleaning SQL steps, in order (no Dagster): shared by the assets, the tests and the
benchmarks, so every caller runs exactly what the graph runs."""

from __future__ import annotations

from models.sql import run_sql

EVENT_STEPS = ("typed_events", "event_conflicts", "clean_interactions", "quarantined_events")
ITEM_STEPS = ("typed_items", "clean_items", "quarantined_items")


def clean_events(con, params: dict) -> dict[str, str]:
    """raw_events -> clean_interactions + quarantined_events; returns each statement's SQL."""
    sql = {name: run_sql(con, name, params) for name in EVENT_STEPS}
    con.execute("DROP TABLE IF EXISTS typed_events; DROP TABLE IF EXISTS event_conflicts")
    return sql


def clean_items(con, params: dict) -> dict[str, str]:
    """raw_items -> clean_items + quarantined_items; returns each statement's SQL."""
    sql = {name: run_sql(con, name, params) for name in ITEM_STEPS}
    con.execute("DROP TABLE IF EXISTS typed_items")
    return sql
