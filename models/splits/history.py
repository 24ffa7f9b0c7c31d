"""What a user's history holds when a held-out pair is asked for: one rule, read everywhere.

interaction_splits orders each user's pairs by (ts, item_id) and assigns the splits in that order
(leave_last_out: the last pair is test, the one before valid; global_time: by time, which the
order agrees with). A target's history is the user's pairs, from the splits its split may read
(`SEES`), that come before the target in that order (`BEFORE_TARGET_SQL`). So the target itself
and whatever follows it are never history, and a batch of events entered in the same second is
cut the same way by every reader: the pairs the split put before the target are history (and
excluded from its candidates), the ones after it are not. MovieLens enters ratings in batches:
127 of its 671 users share their test pair's second with 306 earlier pairs, the valid one among
them; a rule on time alone ("strictly before the target's second") would drop those from one
reader's history and not another's.

Readers: the two-tower's valid and test sets (models/retrieval/data.py `load_from_warehouse`),
the ranker's candidate lists (models/ranking/data.py `known_pairs`: the history its retrieval
reads and its candidates exclude) and the ranker's history tokens over the action labels
(models/ranking/data.py `HISTORY_SQL`, the same predicate over exposures).
"""

from __future__ import annotations

import pandas as pd

# the splits whose pairs a target of each split may read (a train cut reads the train pairs
# before it; valid the train period; test train + valid)
SEES = {"train": ("train",), "valid": ("train",), "test": ("train", "valid")}

# e: an event (user_id, item_id, ts); c: the target it is asked for (user_id, cut_ts = the target
# pair's ts, target_item = its item): e is history when it comes first in the (ts, item_id) order.
# The SQL readers (the ranker's history tokens) use this predicate; `history_pairs` below is the
# same predicate over frames (VARCHAR compares by bytes, Python str by code point: the same order
# for UTF-8), and tests/test_ranking.py checks that every reader gives the same histories.
BEFORE_TARGET_SQL = "(e.ts, e.item_id) < (c.cut_ts, c.target_item)"


def history_pairs(pairs: pd.DataFrame, cuts: pd.DataFrame) -> pd.DataFrame:
    """pairs: interaction_splits rows (user_id, item_id, ts, split); cuts: one row per target
    (user_id, split, cut_ts, target_item, optional cut: 0 when absent) -> the pairs each target's
    history holds: user_id, split, cut, item_id, ts, in no particular order.

    In pandas rather than DuckDB so the result shares the pairs' string objects: at 100M events
    a DuckDB join handed back as a frame made new strings for every id of ~27M history rows per
    split, and the two-tower's loading passed 18 GiB here (its valid and test histories are nearly
    every pair)."""
    missing = {"user_id", "split", "cut_ts", "target_item"} - set(cuts.columns)
    if missing:
        raise ValueError(f"history_pairs: cuts lack {sorted(missing)} (one row per target: its user, split, ts, item)")
    c = cuts.assign(cut=cuts["cut"] if "cut" in cuts else 0)[["user_id", "split", "cut", "cut_ts", "target_item"]]
    parts = []
    for split, seen in SEES.items():
        cs = c[c.split == split]
        if cs.empty:
            continue
        # only these cuts' users' pairs are copied (a sample's few, not every pair) before the join
        mine = pairs.split.isin(seen) & pairs.user_id.isin(cs.user_id.unique())
        m = cs.merge(pairs.loc[mine, ["user_id", "item_id", "ts"]], on="user_id")
        before = (m.ts < m.cut_ts) | ((m.ts == m.cut_ts) & (m.item_id < m.target_item))
        parts.append(m.loc[before, ["user_id", "split", "cut", "item_id", "ts"]])
    if not parts:
        return pd.DataFrame(
            {
                k: pd.Series(dtype=pairs[k].dtype if k in pairs else "int64")
                for k in ("user_id", "split", "cut", "item_id", "ts")
            }
        )
    return pd.concat(parts, ignore_index=True)


def first_targets(pairs: pd.DataFrame, split: str) -> pd.DataFrame:
    """Each user's first pair of `split` in the (ts, item_id) order, as a cut (user_id, split,
    cut_ts, target_item): where the split's history ends for that user."""
    t = pairs[pairs.split == split].sort_values(["user_id", "ts", "item_id"], kind="stable")
    t = t.drop_duplicates("user_id", keep="first")
    return pd.DataFrame(
        {
            "user_id": t.user_id.to_numpy(),
            "split": split,
            "cut_ts": t.ts.to_numpy(),
            "target_item": t.item_id.to_numpy(),
        }
    )
