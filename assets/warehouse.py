"""The SQL steps of the data half, in order (no Dagster): shared by the assets, the tests and
the benchmarks, so every caller runs exactly what the graph runs."""

from __future__ import annotations

import hashlib
import json

from assets.sqlfiles import run_sql

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


def build_splits(con, params: dict) -> str:
    return run_sql(con, "interaction_splits", params)


def vocabulary_fingerprint(con, params: dict) -> str:
    """sha256 over every (vocabulary, key, idx) and the config: later artifacts record it, and
    a checkpoint trained against another vocabulary can be refused."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    cur = con.execute("SELECT vocabulary, key, idx FROM vocabularies ORDER BY vocabulary, idx")
    while batch := cur.fetchmany(100_000):
        h.update("\n".join(f"{v}\t{k}\t{i}" for v, k, i in batch).encode())
    return h.hexdigest()


def build_vocabularies(con, params: dict) -> tuple[str, str]:
    """vocabularies + vocabulary_info (fingerprint, buckets); returns (SQL, fingerprint)."""
    sql = run_sql(con, "vocabularies", params)
    fingerprint = vocabulary_fingerprint(con, params)
    con.execute("""CREATE OR REPLACE TABLE vocabulary_info AS
                   SELECT $fp AS fingerprint, $nb::INTEGER AS num_buckets, now() AS built_at""",
                {"fp": fingerprint, "nb": params["num_buckets"]})
    return sql, fingerprint


def build_warehouse(con, landing) -> str:
    """Every data asset's SQL with default configuration, without Dagster (tests, benchmarks);
    returns the vocabulary fingerprint."""
    from assets.config import CleaningConfig, SplitConfig, VocabularyConfig
    from assets.landing import EVENTS, ITEMS, ingest_folder

    ingest_folder(con, landing, EVENTS, log=lambda m: None)
    ingest_folder(con, landing, ITEMS, log=lambda m: None)
    params = CleaningConfig().sql_params()
    clean_events(con, params)
    clean_items(con, params)
    build_splits(con, SplitConfig().sql_params())
    return build_vocabularies(con, VocabularyConfig().sql_params())[1]
