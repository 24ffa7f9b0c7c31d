"""Offline figures of a ranked candidate list against the retriever's own order over the same
candidates: NDCG@K / HR@K of the held-out pair, per-action AUC, and what happens to candidates
the user reacted to negatively.

Ranks count ties against the target (1 + the other candidates scoring >= it), as in
models/retrieval/evaluation.py; a user whose target was not retrieved scores 0 in both orders.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def order_metrics(scores: torch.Tensor, is_target: torch.Tensor, valid: torch.Tensor, ks=(10,)) -> dict[str, float]:
    """scores, is_target, valid: (G, C) -> NDCG@k, HR@k over G users (one target each at most)."""
    assert scores.shape == is_target.shape == valid.shape, (scores.shape, is_target.shape, valid.shape)
    s = torch.where(valid, scores.float(), torch.tensor(-torch.inf))
    has = (is_target & valid).any(1)  # (G,)
    t = torch.where(is_target & valid, s, torch.tensor(torch.inf)).min(1).values  # (G,) the target's score
    rank = ((s >= t[:, None]) & valid & ~is_target).sum(1) + 1  # (G,)
    rank = torch.where(has, rank, torch.tensor(10**9)).double()
    out = {"users": float(len(s)), "target_in_candidates": float(has.double().mean())}
    for k in ks:
        hit = rank <= k
        out[f"hr@{k}"] = float(hit.double().mean())
        out[f"ndcg@{k}"] = float(torch.where(hit, 1.0 / torch.log2(rank + 1), torch.zeros_like(rank)).mean())
    return out


def action_auc(probs: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, names) -> dict[str, float | None]:
    """Per-action ROC AUC over every valid candidate; None where the labels hold one class only."""
    v = valid.numpy().ravel()
    out: dict[str, float | None] = {}
    for a, name in enumerate(names):
        y = labels[..., a].numpy().ravel()[v]
        p = probs[..., a].numpy().ravel()[v]
        out[name] = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None
    return out


def negatives_pushed_out(
    rank_scores: torch.Tensor,
    retrieval_scores: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    negative: torch.Tensor,
    k: int = 10,
) -> dict[str, float]:
    """Candidates with a negative action (negative: (A,) bool over actions): how many sit in each
    order's top k, and the share of those in the retrieval top k that ranking moves out of it."""
    neg = (labels[..., negative].sum(-1) > 0) & valid  # (G, C)

    def top(scores):
        s = torch.where(valid, scores.float(), torch.tensor(-torch.inf))
        kk = min(k, s.shape[1])
        m = torch.zeros_like(valid)
        m.scatter_(1, torch.topk(s, kk, dim=1).indices, True)
        return m & valid

    r_top, k_top = top(retrieval_scores), top(rank_scores)
    before = int((neg & r_top).sum())
    moved = int((neg & r_top & ~k_top).sum())
    return {
        f"negatives_in_top{k}_retrieval": float(before),
        f"negatives_in_top{k}_ranked": float((neg & k_top).sum()),
        f"negatives_pushed_out_of_top{k}": moved / before if before else math.nan,
    }


def compare_orders(probs: torch.Tensor, weighted: torch.Tensor, rs, names, negative: torch.Tensor, k: int = 10) -> dict:
    """Everything ranking_evaluation reports for one split (rs: a RankingSet; probs (G, C, A),
    weighted (G, C) from the ranker)."""
    valid = rs.cand_valid & rs.retrieved  # the retrieved lists only: both orders rank the same items
    retrieval = order_metrics(rs.retrieval_score, rs.is_target, valid, (k,))
    ranked = order_metrics(weighted, rs.is_target, valid, (k,))
    return {
        "retrieval": retrieval,
        "ranked": ranked,
        "ndcg_ratio": ranked[f"ndcg@{k}"] / retrieval[f"ndcg@{k}"] if retrieval[f"ndcg@{k}"] else math.nan,
        "auc": action_auc(probs, rs.labels, valid, names),
        **negatives_pushed_out(weighted, rs.retrieval_score, rs.labels, valid, negative, k),
    }


def nan_to_none(x):
    """JSON-safe copy: NaN -> None (a figure that does not exist is not 0.0)."""
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def mean_or_none(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None
