"""Ranking metrics: worked by hand on tiny score tables, and the one-sort popularity path
against brute-force scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.retrieval.evaluation import (
    bootstrap_interval,
    grouped_metrics,
    paired_difference,
    per_user_metrics,
    popularity_metrics,
    rank_metrics,
)


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


def test_per_user_vectors_are_the_worked_ranks():
    # the worked example above: user 0's target ranks 2, user 1's ranks 5
    scores = torch.tensor([[0.9, 0.1, 0.7, 0.2, 0.8], [0.1, 0.5, 0.3, 0.1, 0.9]])
    m, per = rank_metrics(
        lambda s, e: scores[s:e].clone(),
        5,
        torch.tensor([2, 0]),
        np.array([0]),
        np.array([0]),
        ks=(2, 5),
        per_user=True,
    )
    np.testing.assert_allclose(per["hr@2"], [1.0, 0.0])
    np.testing.assert_allclose(per["ndcg@5"], [1 / math.log2(3), 1 / math.log2(6)])
    np.testing.assert_allclose(per["mrr"], [1 / 2, 1 / 5])
    np.testing.assert_array_equal(per["rank"], [2, 5])
    assert all(m[k] == pytest.approx(v.mean()) for k, v in per.items() if k != "rank")
    # the one-sort popularity path gives the same vectors as scoring every item
    counts = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    pop = torch.as_tensor(counts, dtype=torch.float32)
    args = (torch.tensor([2, 0]), np.array([0]), np.array([4]))
    _, brute = rank_metrics(lambda s, e: pop.expand(e - s, -1).clone(), 5, *args, ks=(2, 5), per_user=True)
    _, fast = popularity_metrics(counts, args[0].numpy(), *args[1:], ks=(2, 5), per_user=True)
    for k in brute:
        np.testing.assert_allclose(fast[k], brute[k], err_msg=k)


def test_grouped_metrics_several_targets_by_hand():
    # user 0 has targets at list positions 1 and 3 (K=2: one hit of min(2, 2) possible);
    # user 1 one target at position 2; user 2 three targets, none in the top 2.
    ranks = np.array([1, 3, 2, 5, 6, 7])
    row_user = np.array([0, 0, 1, 2, 2, 2])
    m = grouped_metrics(ranks, row_user, 3, ks=(2,))
    np.testing.assert_allclose(m["hr@2"], [1, 1, 0])
    np.testing.assert_allclose(m["recall@2"], [0.5, 1.0, 0.0])
    ideal2 = 1 + 1 / math.log2(3)
    np.testing.assert_allclose(m["ndcg@2"], [1 / ideal2, 1 / math.log2(3), 0.0])
    # one target per user: the single-target vectors
    r = np.array([1, 4, 12, 2])
    one = grouped_metrics(r, np.arange(4), 4, ks=(10,))
    single = per_user_metrics(r, ks=(10,))
    for k in ("hr@10", "ndcg@10"):
        np.testing.assert_allclose(one[k], single[k])
    np.testing.assert_allclose(one["recall@10"], single["hr@10"])


def test_intervals_cover_the_mean_and_a_paired_difference_tells_a_real_gain_from_noise():
    rng = np.random.default_rng(0)
    base = (rng.random(2_000) < 0.1).astype(float)  # HR-like per-user figures around 0.1
    lo, hi = bootstrap_interval(base, resamples=500)
    assert lo < base.mean() < hi and hi - lo < 0.04
    # the same users, relabelled: no difference, so zero lies inside the interval
    same = paired_difference(base, base[rng.permutation(len(base))], resamples=500)
    assert same["difference_lo"] < 0 < same["difference_hi"]
    # a scorer that also hits 300 of the users the other missed is better on every resample
    better = base.copy()
    better[np.flatnonzero(base == 0)[:300]] = 1.0
    gain = paired_difference(better, base, resamples=500)
    assert gain["difference"] == pytest.approx(300 / 2_000)
    assert gain["difference_lo"] > 0.1 and gain["ratio_lo"] > 1.5
    with pytest.raises(ValueError, match="same non-empty user set"):
        paired_difference(base, base[:10])
