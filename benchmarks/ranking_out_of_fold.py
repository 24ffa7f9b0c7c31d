"""The retriever that scores the ranker's train cuts: the champion's towers and training,
without the pairs of the train label windows.

Why: the champion trained on every train pair, the pairs at the train cuts included. On its own
training pairs it is more sure than on held-out ones (MovieLens, 200 candidates: the held-out
item is retrieved for 70% of train cuts against 61% of valid and 53% of test users, and the
retrieval order's NDCG@10 over the train lists is 0.089 against 0.0725 / 0.0510), so a ranker
trained on its train lists learns to trust the retrieval score and rank more than valid and test
reward. A retriever that never saw a train cut's target scores the train lists the way the
champion scores valid/test (57% of train targets retrieved, NDCG@10 0.061).

It trains on each user's train pairs before their first train cut (ranking_cuts) and the
negative feedback before it, with the champion's TowerConfig and the library's TrainConfig
(seed 0). `build_ranking_candidates(..., train_retriever=)` takes it; benchmarks/bench_ranking.py
runs it with `--train-retriever out_of_fold`. A rejected experiment, so it lives here and not in
the library: on MovieLens it moved test NDCG@10 within chance and lowered valid (README, ranking
section), for one more two-tower training per run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.ranking.data import ranking_cuts
from models.retrieval.data import build_eval_set, build_train_set, load_catalog

NEGATIVES_SQL = "SELECT user_id, item_id, ts FROM clean_interactions WHERE is_negative"


def label_window_pairs(pairs: pd.DataFrame, cuts: pd.DataFrame) -> np.ndarray:
    """pairs: interaction_splits rows, cuts: ranking_cuts -> a bool mask over pairs of the train
    pairs at or after their user's first train cut (every train label window's pairs): what a
    retriever that scores the train cuts must not train on."""
    first = cuts[cuts.split == "train"].groupby("user_id")["cut_ts"].min()
    at = pairs["user_id"].map(first)
    return ((pairs["split"] == "train") & at.notna() & (pairs["ts"] >= at)).to_numpy()


def train_cut_retriever(con, tower, *, label_share: float, train_cuts: int, log=None):
    """A TwoTower with TowerConfig `tower` (the champion's), trained on interaction_splits' train
    pairs outside every train label window; validated on the valid split as the champion is."""
    from models.retrieval.training import TrainConfig, train

    catalog, _, _ = load_catalog(con, n_hashes=tower.n_hashes, item_buckets=tower.item_buckets)
    pairs = con.execute("SELECT user_id, item_id, ts, split FROM interaction_splits").df()
    cuts = ranking_cuts(pairs, label_share, train_cuts)
    train_pairs = pairs[(pairs.split == "train").to_numpy() & ~label_window_pairs(pairs, cuts)]
    first = cuts[cuts.split == "train"].groupby("user_id")["cut_ts"].min()
    neg = con.execute(NEGATIVES_SQL).df()
    at = neg["user_id"].map(first)
    held = pairs[pairs.split.isin(("valid", "test"))].groupby("user_id")["ts"].min()
    end = at.fillna(neg["user_id"].map(held))  # users without train cuts: before their first valid/test pair
    neg = neg[end.isna() | (neg["ts"] < end)]
    kw = dict(history_len=tower.history_len, n_hashes=tower.n_hashes, user_buckets=tower.user_buckets)
    train_set = build_train_set(train_pairs, neg, catalog, **kw)
    valid = build_eval_set("valid", pairs[pairs.split == "train"], pairs[pairs.split == "valid"], catalog, **kw)
    if log:
        log(
            f"train-cut retriever: {len(train_pairs):,} of {int((pairs.split == 'train').sum()):,} train pairs "
            "(the train label windows left out)"
        )
    result = train(catalog, train_set, tower, TrainConfig(), valid=valid, log=log or (lambda m: None))
    return result.model.eval()
