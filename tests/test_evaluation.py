"""Ranking metrics: worked by hand on tiny score tables, and the one-sort popularity path
against brute-force scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.retrieval.evaluation import popularity_metrics, rank_metrics


def test_metrics_worked_by_hand():
    # 2 users x 5 items. User 0: target item 2 scores 0.7; item 0 (0.9) is seen and excluded,
    # item 4 (0.8) beats it -> rank 2. User 1: target item 0 scores 0.1; items 1..4 all score
    # higher except item 3 which ties (0.1) -> ties count against the target: rank 1 + 4 = 5.
    scores = torch.tensor([[0.9, 0.1, 0.7, 0.2, 0.8], [0.1, 0.5, 0.3, 0.1, 0.9]])
    m = rank_metrics(
        lambda s, e: scores[s:e].clone(),
        5,
        torch.tensor([2, 0]),
        np.array([0]),
        np.array([0]),
        ks=(1, 2, 5),
        max_score_bytes=4 * 5,
    )  # one user per chunk
    assert m["hr@1"] == 0.0
    assert m["hr@2"] == 0.5 and m["hr@5"] == 1.0
    assert m["ndcg@2"] == pytest.approx(0.5 * (1 / math.log2(3)))
    assert m["ndcg@5"] == pytest.approx(0.5 * (1 / math.log2(3) + 1 / math.log2(6)))
    assert m["mrr"] == pytest.approx(0.5 * (1 / 2 + 1 / 5))
    # top-1: user 0 -> item 4 (item 0 is seen), user 1 -> item 4: one distinct item of 5
    assert m["coverage@1"] == pytest.approx(1 / 5)


def test_constant_scorer_earns_nothing():
    m = rank_metrics(
        lambda s, e: torch.zeros(e - s, 50),
        50,
        torch.arange(10),
        np.array([], np.int64),
        np.array([], np.int64),
        ks=(10,),
    )
    assert m["hr@10"] == 0.0 and m["ndcg@10"] == 0.0


@pytest.mark.parametrize("ties", [False, True])
def test_popularity_by_one_sort_equals_scoring_every_item(ties):
    rng = np.random.default_rng(0)
    N, E = 200, 300
    counts = rng.integers(0, 20, N).astype(float) if ties else rng.permutation(N).astype(float)
    targets = rng.integers(0, N, E)
    seen_rows = np.repeat(np.arange(E), rng.integers(0, 30, E))
    seen_items = rng.integers(0, N, len(seen_rows))  # duplicates and the target itself included
    pop = torch.as_tensor(counts, dtype=torch.float32)
    brute = rank_metrics(lambda s, e: pop.expand(e - s, -1).clone(), N, torch.as_tensor(targets), seen_rows, seen_items)
    fast = popularity_metrics(counts, targets, seen_rows, seen_items)
    for k, v in brute.items():
        if k.startswith("coverage") and ties:
            continue  # which of several tied items fill the top K is arbitrary in torch.topk
        assert fast[k] == pytest.approx(v), k
