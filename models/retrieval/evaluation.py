"""Full-ranking offline evaluation: every catalog item is scored, seen items are excluded.

With one held-out target per user, HR@K equals Recall@K; NDCG@K = 1 / log2(rank + 1) when the
target ranks within K; MRR uses the full rank. Coverage@K is the share of the catalog that
appears in at least one user's top K. Ties count against the target (rank = 1 + the number of
items scoring >= the target, itself excluded), so a constant scorer earns nothing.

Memory stays bounded at any catalog size: users are scored in chunks of at most
`max_score_bytes` of float32 scores (256 MiB: 64 users at 1M items), never a (1,024 x N) block.
Popularity scores every user alike, so its ranks come from one sorted copy of the counts
(the same ranks as scoring, without an (E x N) pass).

Figures come with 95% intervals over users (`bootstrap_interval`), and a comparison of two
scorers on the same users is a paired interval of their difference (`paired_difference`): the
promotion check compares intervals, not points. Ranking is full (every item) but need not cover
every user: `EvalSet.sample` draws the seeded user sample `model_evaluation` ranks
(`EvaluationRun.eval_users`), since at 1M items one user costs one (1 x N) score row whatever
the kernel: the matrix product is most of its time.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from models.progress import Progress
from models.retrieval.data import Catalog, EvalSet, TrainSet

MAX_SCORE_BYTES = 256 * 2**20


def per_user_metrics(ranks: np.ndarray, ks=(10, 20, 50)) -> dict[str, np.ndarray]:
    """Each user's reciprocal rank, HR@K and NDCG@K from the target's rank (1 = first): the
    vectors whose means are the reported metrics, kept for confidence intervals over users."""
    ranks = np.asarray(ranks, dtype=np.float64)  # (E,)
    out = {"mrr": 1.0 / ranks}
    for k in ks:
        hit = ranks <= k
        out[f"hr@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(ranks + 1), 0.0)
    return out


def bootstrap_interval(values: np.ndarray, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of mean(values) over `resamples` resamples of the users (values:
    one figure per user, e.g. per_user_metrics' "ndcg@10")."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("no users to resample")
    idx = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    lo, hi = np.percentile(values[idx].mean(axis=1), [2.5, 97.5])
    return float(lo), float(hi)


def paired_difference(a: np.ndarray, b: np.ndarray, resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """mean(a) - mean(b) for two scorers on the same users, with its paired 95% interval (the
    same resampled users for both) and the ratio mean(a) / mean(b) with its interval."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or len(a) == 0:
        raise ValueError(f"paired figures need the same non-empty user set: {a.shape} vs {b.shape}")
    idx = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    ma, mb = a[idx].mean(axis=1), b[idx].mean(axis=1)
    diff = np.percentile(ma - mb, [2.5, 97.5])
    ratio = np.percentile(ma / np.maximum(mb, 1e-12), [2.5, 97.5])
    return {
        "difference": float(a.mean() - b.mean()),
        "difference_lo": float(diff[0]),
        "difference_hi": float(diff[1]),
        "ratio": float(a.mean() / b.mean()) if b.mean() > 0 else float("inf"),
        "ratio_lo": float(ratio[0]),
        "ratio_hi": float(ratio[1]),
    }


def grouped_metrics(ranks: np.ndarray, row_user: np.ndarray, n_users: int, ks=(10, 20, 50)) -> dict[str, np.ndarray]:
    """Per-user HR@K, Recall@K and NDCG@K when a user has several targets, one row each.

    ranks: (R,) each target's position in the user's one ranked list (rank_metrics ranks a row's
    target against every unseen item, the user's other targets included, so this is the list
    position); row_user: (R,) the row's user in 0..n_users-1. Recall@K = hits / min(K, targets),
    NDCG@K = DCG / the ideal DCG of min(K, targets) hits. With one target per user they are
    per_user_metrics' HR@K and NDCG@K.
    """
    ranks = np.asarray(ranks, dtype=np.float64)  # (R,)
    row_user = np.asarray(row_user)
    n_targets = np.bincount(row_user, minlength=n_users)  # (U,)
    if (n_targets == 0).any():
        raise ValueError(f"{int((n_targets == 0).sum())} users have no target row")
    out = {}
    for k in ks:
        hit = ranks <= k
        hits = np.bincount(row_user, weights=hit, minlength=n_users)
        dcg = np.bincount(row_user, weights=np.where(hit, 1.0 / np.log2(ranks + 1), 0.0), minlength=n_users)
        ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))  # (k,) IDCG of 1..k hits
        best = np.minimum(n_targets, k)
        out[f"hr@{k}"] = (hits > 0).astype(np.float64)
        out[f"recall@{k}"] = hits / best
        out[f"ndcg@{k}"] = dcg / ideal[best - 1]
    return out


def _metrics(ranks: np.ndarray, ks, top: np.ndarray | None, n_items: int, per_user: bool = False):
    vectors = per_user_metrics(ranks, ks)
    out = {"users": float(len(ranks)), **{name: float(v.mean()) for name, v in vectors.items()}}
    if top is not None:
        for k in ks:
            out[f"coverage@{k}"] = float(len(np.unique(top[:, :k])) / n_items)
    return (out, {**vectors, "rank": np.asarray(ranks)}) if per_user else out


def _sorted_seen(E: int, seen_rows: np.ndarray, seen_items: np.ndarray):
    order = np.argsort(seen_rows, kind="stable")
    seen_rows, seen_items = seen_rows[order], seen_items[order]
    return seen_rows, seen_items, np.searchsorted(seen_rows, np.arange(E + 1))


def rank_metrics(
    score_rows: Callable[[int, int], torch.Tensor],
    n_items: int,
    targets: torch.Tensor,
    seen_rows: np.ndarray,
    seen_items: np.ndarray,
    ks=(10, 20, 50),
    *,
    coverage: bool = True,
    max_score_bytes: int = MAX_SCORE_BYTES,
    log: Callable[[str], None] | None = None,
    what: str = "evaluation",
    per_user: bool = False,
) -> dict[str, float]:
    """score_rows(start, end) -> (end - start, n_items) scores for users start..end, a tensor
    the caller does not keep (it is masked in place). per_user=True returns (metrics, vectors):
    `per_user_metrics` of every user plus the target's "rank", in row order."""
    E = len(targets)
    if E == 0:
        raise ValueError("no evaluation users: nothing to rank")
    seen_rows, seen_items, bounds = _sorted_seen(E, seen_rows, seen_items)
    chunk = int(max(1, min(1024, max_score_bytes // (4 * n_items))))
    ranks = np.empty(E, dtype=np.int64)
    kmax = min(max(ks), n_items)
    top = np.empty((E, kmax), dtype=np.int64) if coverage else None
    progress = Progress(what, E, "users", log)
    for s in range(0, E, chunk):
        e = min(E, s + chunk)
        scores = score_rows(s, e).float()  # (b, N)
        assert scores.shape == (e - s, n_items), scores.shape
        lo, hi = bounds[s], bounds[e]
        r = torch.as_tensor(seen_rows[lo:hi] - s)
        c = torch.as_tensor(seen_items[lo:hi])
        t = targets[s:e]
        target_score = scores.gather(1, t[:, None])  # (b, 1)
        scores[r, c] = -torch.inf  # never recommend what the user already has
        scores.scatter_(1, t[:, None], -torch.inf)
        sn, tn = scores.numpy(), target_score.numpy()
        # row by row: numpy counts a cache-resident row ~20x faster than torch reduces a (b, N) bool block
        ranks[s:e] = [np.count_nonzero(sn[i] >= tn[i, 0]) + 1 for i in range(e - s)]
        if top is not None:
            scores.scatter_(1, t[:, None], target_score)
            top[s:e] = torch.topk(scores, kmax, dim=1).indices.numpy()
        progress.update(e - s)
    return _metrics(ranks, ks, top, n_items, per_user)


def popularity_metrics(
    counts: np.ndarray,
    targets: np.ndarray,
    seen_rows: np.ndarray,
    seen_items: np.ndarray,
    ks=(10, 20, 50),
    *,
    per_user: bool = False,
) -> dict[str, float]:
    """rank_metrics for the scorer that gives every user `counts`, from one sort: the target's
    rank is 1 + the items scoring >= it, minus itself, minus the seen ones among them; a
    user's top K is the first K of the global order that the user has not seen."""
    E, N = len(targets), len(counts)
    if E == 0:
        raise ValueError("no evaluation users: nothing to rank")
    counts = np.asarray(counts, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    pairs = (
        np.unique(np.stack([seen_rows, seen_items], axis=1), axis=0) if len(seen_rows) else np.empty((0, 2), np.int64)
    )
    pairs = pairs[pairs[:, 1] != targets[pairs[:, 0]]]  # the target is never its own competitor
    srows, sitems = pairs[:, 0], pairs[:, 1]
    t_score = counts[targets]  # (E,)
    ge = N - np.searchsorted(np.sort(counts), t_score, side="left")  # items scoring >= the target, itself included
    seen_ge = np.bincount(srows, weights=counts[sitems] >= t_score[srows], minlength=E).astype(np.int64)
    ranks = ge - 1 - seen_ge + 1
    kmax = min(max(ks), N)
    bounds = np.searchsorted(srows, np.arange(E + 1))
    longest = int(np.diff(bounds).max(initial=0))
    order = np.argsort(-counts, kind="stable")[: kmax + longest]  # (kmax + longest,)
    top = np.empty((E, kmax), dtype=np.int64)
    for u in range(E):
        own = sitems[bounds[u] : bounds[u + 1]]
        if len(own):  # unseen first; a user who has seen nearly everything gets seen ones last, as -inf would
            mask = np.isin(order, own)
            top[u] = np.concatenate([order[~mask], order[mask]])[:kmax]
        else:
            top[u] = order[:kmax]
    return _metrics(ranks, ks, top, N, per_user)


@torch.no_grad()
def item_vectors(model, catalog: Catalog, batch: int = 16384, log: Callable[[str], None] | None = None) -> torch.Tensor:
    """(N, D) item vectors in eval mode."""
    model.eval()
    progress = Progress("item vectors", len(catalog), "items", log)
    out = []
    for s in range(0, len(catalog), batch):
        out.append(model.item(catalog.features(torch.arange(s, min(len(catalog), s + batch)))))
        progress.update(len(out[-1]))
    return torch.cat(out)


@torch.no_grad()
def user_vectors(
    model, catalog: Catalog, user_hash: torch.Tensor, history: torch.Tensor, batch: int = 2048
) -> torch.Tensor:
    """(E, D) user vectors from hashed ids and left-padded histories."""
    model.eval()
    out = []
    for s in range(0, len(history), batch):
        h = history[s : s + batch]
        out.append(model.users(catalog, user_hash[s : s + batch], h))
    return torch.cat(out)


def evaluate_model(
    model,
    catalog: Catalog,
    ev: EvalSet,
    ks=(10, 20, 50),
    *,
    coverage: bool = True,
    log: Callable[[str], None] | None = None,
    per_user: bool = False,
) -> dict[str, float]:
    """Full-ranking metrics of a two-tower on an EvalSet (per_user: as in rank_metrics)."""
    items = item_vectors(model, catalog, log=log)
    users = user_vectors(model, catalog, ev.user_hash, ev.history)
    return rank_metrics(
        lambda s, e: users[s:e] @ items.T,
        len(catalog),
        ev.target,
        ev.seen_rows,
        ev.seen_items,
        ks,
        coverage=coverage,
        log=log,
        what=f"{ev.name} ranking",
        per_user=per_user,
    )


def evaluate_popularity(train: TrainSet, ev: EvalSet, ks=(10, 20, 50), *, per_user: bool = False) -> dict[str, float]:
    """The baseline every model must beat: train positives per item, same exclusions."""
    return popularity_metrics(
        train.item_counts.numpy(), ev.target.numpy(), ev.seen_rows, ev.seen_items, ks, per_user=per_user
    )
