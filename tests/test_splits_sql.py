"""Temporal splits, their audits and vocabularies on hand-written clean tables."""

from __future__ import annotations

import numpy as np
import pytest

from models.splits.rules import SplitRules, VocabularyRules
from models.sql import query, run_sql
from models.splits.vocab import Vocabulary, bucket_of


def _clean(con, rows):
    """rows: (user, item, day, positive)."""
    con.execute("""CREATE OR REPLACE TABLE clean_interactions (event_id VARCHAR, user_id VARCHAR, item_id VARCHAR,
                   event_type VARCHAR, ts TIMESTAMP, value DOUBLE, is_positive BOOLEAN, is_negative BOOLEAN,
                   source_file VARCHAR, line BIGINT, duplicate_count BIGINT, extra VARCHAR)""")
    con.executemany(
        "INSERT INTO clean_interactions VALUES (NULL, ?, ?, 'click', TIMESTAMP '2024-01-01' + to_days(?::INTEGER), NULL, ?, NOT ?, 'f', 1, 0, NULL)",
        [(u, i, d, p, p) for u, i, d, p in rows],
    )


def _splits(con):
    return {(u, i): s for u, i, s in con.execute("SELECT user_id, item_id, split FROM interaction_splits").fetchall()}


def test_leave_last_out(con):
    _clean(
        con,
        [
            # u1: four distinct positives; i1 again later (a repeat keeps its first time, day 1)
            ("u1", "i1", 1, True),
            ("u1", "i2", 2, True),
            ("u1", "i3", 3, True),
            ("u1", "i4", 4, True),
            ("u1", "i1", 9, True),
            ("u1", "i9", 10, False),  # not a positive: never in the splits
            # u2: only two positives -> train only
            ("u2", "i1", 1, True),
            ("u2", "i2", 5, True),
        ],
    )
    run_sql(con, "interaction_splits", SplitRules().sql_params())
    assert _splits(con) == {
        ("u1", "i1"): "train",
        ("u1", "i2"): "train",
        ("u1", "i3"): "valid",
        ("u1", "i4"): "test",
        ("u2", "i1"): "train",
        ("u2", "i2"): "train",
    }
    assert query(con, "audit_split_leakage") == [] and query(con, "audit_split_cold_users") == []


def test_global_time_cut_marks_users_without_history_cold(con):
    _clean(
        con,
        [
            ("u1", "i1", 1, True),
            ("u1", "i2", 6, True),
            ("u1", "i3", 8, True),
            ("u2", "i1", 7, True),
            ("u2", "i2", 9, True),
        ],
    )
    run_sql(
        con,
        "interaction_splits",
        SplitRules(strategy="global_time", valid_start="2024-01-06", test_start="2024-01-08").sql_params(),
    )
    # u2's first pair is after the valid cut: no train history, so its pairs are cold_start
    assert _splits(con) == {
        ("u1", "i1"): "train",
        ("u1", "i2"): "valid",
        ("u1", "i3"): "test",
        ("u2", "i1"): "cold_start",
        ("u2", "i2"): "cold_start",
    }
    assert query(con, "audit_split_cold_users") == []


def test_audits_return_the_offending_users(con):
    con.execute("""CREATE TABLE interaction_splits AS SELECT * FROM (VALUES
        ('u1', 'i1', TIMESTAMP '2024-01-05', 'train'), ('u1', 'i2', TIMESTAMP '2024-01-02', 'test'),
        ('u2', 'i1', TIMESTAMP '2024-01-05', 'test')) t(user_id, item_id, ts, split)""")
    assert [r[0] for r in query(con, "audit_split_leakage")] == ["u1"]
    assert query(con, "audit_split_cold_users") == [("u2", 1)]


def test_unknown_split_strategy_is_a_clear_error():
    with pytest.raises(ValueError, match="leave_last_out or global_time"):
        SplitRules(strategy="random").sql_params()


def test_vocabularies_from_train_only_with_floor_and_buckets(con):
    _clean(
        con,
        [
            ("u1", "i1", 1, True),
            ("u1", "i2", 2, True),
            ("u1", "i3", 3, True),
            ("u1", "i4", 4, True),
            ("u2", "i1", 1, True),
            ("u2", "i2", 2, True),
            ("u2", "i5", 3, True),
            ("u2", "i6", 4, True),
        ],
    )
    con.execute("""CREATE TABLE clean_items AS SELECT * FROM (VALUES
        ('i1', 'Space Wars (1977)', ['scifi', 'action']), ('i2', 'Space Love', ['scifi', 'romance']),
        ('i6', 'Hidden Test Item', ['secret'])) t(item_id, title, categories)""")
    run_sql(con, "interaction_splits", SplitRules().sql_params())
    run_sql(con, "vocabularies", VocabularyRules(num_buckets=4).sql_params())
    vocab = {
        (v, k): (c, i) for v, k, c, i in con.execute("SELECT vocabulary, key, count, idx FROM vocabularies").fetchall()
    }
    # train = i1, i2 for both users; i3/i5 valid, i4/i6 test: never in the vocabulary
    assert {k for v, k in vocab if v == "item_id"} == {"i1", "i2"}
    # ids: count 2 each, ties by key; indices start after padding (0) and 4 buckets
    assert vocab[("item_id", "i1")] == (2, 5) and vocab[("item_id", "i2")] == (2, 6)
    # scifi is on both train items (2 + 2 interactions); action/romance have 2; "secret" is test-only
    assert vocab[("category", "scifi")] == (4, 5)
    assert ("category", "secret") not in vocab
    # title tokens: the year suffix is stripped, "space" counted over both items
    assert vocab[("title_token", "space")] == (4, 5)
    assert ("title_token", "1977") not in vocab


def test_vocabulary_encode_uses_buckets_for_unseen_keys():
    v = Vocabulary("item_id", np.array(["i1", "i2"], dtype=object), np.array([5, 6]), num_buckets=4)
    out = v.encode(["i2", "brand-new", None, "i1"])
    assert out[0] == 6 and out[3] == 5 and out[2] == 0
    # an unseen key lands in a real bucket (1..4), the same one every time (CRC32, not salted hash())
    assert 1 <= out[1] <= 4 and out[1] == bucket_of("brand-new", 4) == v.encode(["brand-new"])[0]
    assert v.size == 7
    with pytest.raises(ValueError, match="above the 4 buckets"):
        Vocabulary("x", np.array(["a"], dtype=object), np.array([3]), num_buckets=4)
