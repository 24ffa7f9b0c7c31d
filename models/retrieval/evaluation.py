"""Full-ranking offline evaluation: every catalog item is scored, seen items are excluded.

With one held-out target per user, HR@K equals Recall@K; NDCG@K = 1 / log2(rank + 1) when the
target ranks within K; MRR uses the full rank. Coverage@K is the share of the catalog that
appears in at least one user's top K. Ties count against the target (rank = 1 + the number of
items scoring >= the target, itself excluded), so a constant scorer earns nothing.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from models.retrieval.data import Catalog, EvalSet, TrainSet


def rank_metrics(score_rows: Callable[[int, int], torch.Tensor], n_items: int, targets: torch.Tensor,
                 seen_rows: np.ndarray, seen_items: np.ndarray, ks=(10, 20, 50), chunk: int = 1024) -> dict[str, float]:
    """score_rows(start, end) -> (end - start, n_items) scores for users start..end."""
    E = len(targets)
    if E == 0:
        raise ValueError("no evaluation users: nothing to rank")
    order = np.argsort(seen_rows, kind="stable")
    seen_rows, seen_items = seen_rows[order], seen_items[order]
    bounds = np.searchsorted(seen_rows, np.arange(E + 1))
    ranks = np.empty(E, dtype=np.int64)
    kmax = max(ks)
    top_items: list[np.ndarray] = []
    for s in range(0, E, chunk):
        e = min(E, s + chunk)
        scores = score_rows(s, e).float().clone()  # (b, N)
        assert scores.shape == (e - s, n_items), scores.shape
        lo, hi = bounds[s], bounds[e]
        r = torch.as_tensor(seen_rows[lo:hi] - s)
        c = torch.as_tensor(seen_items[lo:hi])
        t = targets[s:e]
        target_score = scores.gather(1, t[:, None])  # (b, 1)
        scores[r, c] = -torch.inf  # never recommend what the user already has
        scores.scatter_(1, t[:, None], -torch.inf)
        ranks[s:e] = (scores >= target_score).sum(1).numpy() + 1
        scores.scatter_(1, t[:, None], target_score)
        top_items.append(torch.topk(scores, min(kmax, n_items), dim=1).indices.numpy())
    top = np.concatenate(top_items)
    out = {"users": float(E), "mrr": float(np.mean(1.0 / ranks))}
    for k in ks:
        hit = ranks <= k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.mean(np.where(hit, 1.0 / np.log2(ranks + 1), 0.0)))
        out[f"coverage@{k}"] = float(len(np.unique(top[:, :k])) / n_items)
    return out


@torch.no_grad()
def item_vectors(model, catalog: Catalog, batch: int = 16384) -> torch.Tensor:
    """(N, D) item vectors in eval mode."""
    model.eval()
    out = [model.item(catalog.features(torch.arange(s, min(len(catalog), s + batch))))
           for s in range(0, len(catalog), batch)]
    return torch.cat(out)


@torch.no_grad()
def user_vectors(model, catalog: Catalog, user_hash: torch.Tensor, history: torch.Tensor,
                 batch: int = 2048) -> torch.Tensor:
    """(E, D) user vectors from hashed ids and left-padded histories."""
    model.eval()
    out = []
    for s in range(0, len(history), batch):
        h = history[s: s + batch]
        out.append(model.users(catalog, user_hash[s: s + batch], h))
    return torch.cat(out)


def evaluate_model(model, catalog: Catalog, ev: EvalSet, ks=(10, 20, 50)) -> dict[str, float]:
    items = item_vectors(model, catalog)
    users = user_vectors(model, catalog, ev.user_hash, ev.history)
    return rank_metrics(lambda s, e: users[s:e] @ items.T, len(catalog), ev.target, ev.seen_rows, ev.seen_items, ks)


def evaluate_popularity(train: TrainSet, ev: EvalSet, ks=(10, 20, 50)) -> dict[str, float]:
    """The baseline every model must beat: train positives per item, same exclusions."""
    pop = train.item_counts.float()
    return rank_metrics(lambda s, e: pop.expand(e - s, -1), len(pop), ev.target, ev.seen_rows, ev.seen_items, ks)
