"""Temporal splits and vocabularies from the clean tables (no Dagster)."""

from __future__ import annotations

import hashlib
import json

from models.sql import run_sql


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
    con.execute(
        """CREATE OR REPLACE TABLE vocabulary_info AS
                   SELECT $fp AS fingerprint, $nb::INTEGER AS num_buckets, now() AS built_at""",
        {"fp": fingerprint, "nb": params["num_buckets"]},
    )
    return sql, fingerprint
