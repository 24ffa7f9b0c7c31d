"""Ranking rows: the champion retriever's candidates per user and split, their action labels,
and the tensors the ranker trains and scores on.

Cuts (one per user and split; what the history may see and where the label window ends):

- ``train``: inside the train period, ``train_cuts`` of them per user (``cut`` 0, 1, ...). The
  user's last ``label_share`` of train pairs (at least one; users with fewer than 2 train pairs
  are skipped) holds the cuts, evenly spaced from its first pair (cut 0, the only one when
  train_cuts is 1) towards its last, one per distinct time; each cut's history and retrieval use
  the train pairs before it, its target is the pair at the cut, and its window ends at the
  user's first valid/test pair. Several cuts give the ranker several next-item examples per
  user, each with its own retrieved list and features as of its own time.
- ``valid``: history = the train period; window from the valid pair to the test pair.
- ``test``: history = train + valid; window from the test pair on.

A cut's history is the pairs before its target in the (ts, item_id) order the splits are
assigned by: the one rule of models/splits/history.py, which the two-tower's valid/test sets read
too (a batch of ratings in the target's second is history up to the target, as the split put it).

So a train row never sees a valid/test event, as history or as a label.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from models.progress import Progress
from models.ranking.features import ItemTimeline, features_for
from models.ranking.labels import mask_to_multihot
from models.retrieval.data import build_eval_set, hash_buckets, load_catalog
from models.retrieval.evaluation import item_vectors, user_vectors
from models.splits.history import BEFORE_TARGET_SQL, history_pairs
from models.sql import run_sql

SPLITS = ("train", "valid", "test")


def ranking_cuts(pairs: pd.DataFrame, label_share: float, train_cuts: int = 1) -> pd.DataFrame:
    """pairs: interaction_splits rows (user_id, item_id, ts, split) -> one row per (user, split,
    cut): user_id, split, cut (0 for valid / test; 0 .. train_cuts - 1 for train), cut_ts,
    end_ts (NaT = open), target_item (the pair at the cut)."""
    if train_cuts < 1:
        raise ValueError(f"train_cuts must be at least 1, got {train_cuts}")
    p = pairs[pairs.split.isin(SPLITS)].sort_values(["user_id", "ts", "item_id"], kind="stable")
    held = p[p.split != "train"]
    first = held.groupby("user_id")["ts"].min().rename("held_ts")  # first valid/test pair
    tr = p[p.split == "train"].join(first, on="user_id")
    n = tr.groupby("user_id")["ts"].transform("size")
    pos = tr.groupby("user_id").cumcount()
    n_label = np.maximum(1, np.floor(label_share * n)).astype(int)
    # cut j at n - n_label + floor(j * n_label / train_cuts): j = 0 is the window's first pair
    at = pos - (n - n_label)  # the pair's place inside the label window (< 0: before it)
    j = np.ceil(at * train_cuts / n_label).astype(int)  # the cut whose position this pair is, if any
    is_cut = (n >= 2) & (at >= 0) & (j < train_cuts) & (np.floor(j * n_label / train_cuts).astype(int) == at)
    start = tr[is_cut].drop_duplicates(["user_id", "ts"], keep="first")  # one cut per distinct time
    cuts = [
        pd.DataFrame(
            {
                "user_id": start.user_id,
                "split": "train",
                "cut": start.groupby("user_id").cumcount(),
                "cut_ts": start.ts,
                "end_ts": start.held_ts,
                "target_item": start.item_id,
            }
        )
    ]
    for split, later in (("valid", "test"), ("test", None)):
        s = held[held.split == split].drop_duplicates("user_id", keep="first")
        end = (
            held[held.split == later].groupby("user_id")["ts"].min().reindex(s.user_id).to_numpy() if later else pd.NaT
        )
        cuts.append(
            pd.DataFrame(
                {
                    "user_id": s.user_id.to_numpy(),
                    "split": split,
                    "cut": 0,
                    "cut_ts": s.ts.to_numpy(),
                    "end_ts": end,
                    "target_item": s.item_id.to_numpy(),
                }
            )
        )
    out = pd.concat(cuts, ignore_index=True)
    out["end_ts"] = pd.to_datetime(out["end_ts"])
    return out.reset_index(drop=True)


def users_within_lists(cuts: pd.DataFrame, max_lists: int, seed: int = 0) -> np.ndarray:
    """cuts: ranking_cuts rows, one candidate list each -> the users whose lists fit the work
    budget `max_lists` (0 = no budget), sorted: every user when all lists fit, else the longest
    prefix of a seeded random order of the users that fits. A kept user keeps all its lists
    (every train cut, valid and test), so the sample is the same users in every split."""
    if max_lists < 0:
        raise ValueError(f"max_lists must be >= 0 (0 = every user), got {max_lists}")
    per_user = cuts.groupby("user_id").size()  # lists per user, users sorted
    if not max_lists or per_user.sum() <= max_lists:
        return per_user.index.to_numpy()
    order = np.random.default_rng(seed).permutation(len(per_user))
    fits = np.cumsum(per_user.to_numpy()[order]) <= max_lists
    if not fits[0]:
        raise ValueError(
            f"max_lists {max_lists} keeps no user: the first sampled user has {per_user.iloc[order[0]]} lists "
            f"(train_cuts + valid + test); raise max_lists or set it to 0 (every user)"
        )
    return np.sort(per_user.index.to_numpy()[order[fits]])


def known_pairs(pairs: pd.DataFrame, cuts: pd.DataFrame) -> pd.DataFrame:
    """Positive pairs each (user, split, cut) may use, by the one history rule
    (models/splits/history.py, as the two-tower's valid/test sets): train pairs (train, valid) or
    train + valid pairs (test) that come before the cut's target in the (ts, item_id) order, ties
    in the target's second included; a user_id, split, cut, item_id, ts frame."""
    return history_pairs(pairs, cuts)


SCORE_BLOCK = 2**26  # scores one retrieval chunk may hold (256 MiB of float32)


@torch.no_grad()
def retrieve(users: torch.Tensor, items: torch.Tensor, ev, n: int, log=None, chunk: int = 1024):
    """The retriever's top n catalog positions per user of `ev` (an EvalSet whose history is the
    time-cut positives; users (E, d) its user vectors, items (N, d) the catalog's), seen items
    excluded: (E, n) positions and scores (-1 / -inf past the catalog). At most `chunk` users a
    block, fewer on a big catalog so a (b, N) score block stays within SCORE_BLOCK: 1,024 users
    x 1M items held 4 GiB and the step peaked at 10.9 GiB; the result does not depend on it."""
    E, N = len(users), len(items)
    chunk = max(1, min(chunk, SCORE_BLOCK // max(N, 1)))
    k = min(n, N)
    pos = np.full((E, n), -1, dtype=np.int64)
    val = np.full((E, n), -np.inf, dtype=np.float32)
    progress = Progress("retrieving candidates", E, "users", log)
    for s in range(0, E, chunk):
        e = min(E, s + chunk)
        scores = users[s:e] @ items.T  # (b, N)
        for r, seen in enumerate(ev.seen_of(range(s, e))):
            scores[r, torch.as_tensor(seen)] = -torch.inf
        v, i = torch.topk(scores, k, dim=1)
        i[torch.isinf(v)] = -1
        pos[s:e, :k], val[s:e, :k] = i.numpy(), v.numpy()
        progress.update(e - s)
    return pos, val


def build_ranking_candidates(
    con,
    retriever,
    *,
    n_candidates: int,
    label_share: float,
    train_cuts: int = 1,
    max_lists: int = 0,
    seed: int = 0,
    train_retriever=None,
    log=None,
) -> dict:
    """Create the ranking_candidates table (sql/ranking_candidates.sql) from interaction_splits,
    action_labels and the champion retriever; returns counts and the SQL text.

    `train_retriever` (same towers, default: the champion) retrieves and scores the train cuts
    instead: benchmarks/ranking_out_of_fold.py trains one without the label-window pairs, whose
    train lists hold targets it never saw, as valid/test targets are to the champion (an
    experiment the product rejected; README, ranking section).

    `max_lists` (0 = none) is the work budget in candidate lists, each a full-catalog retrieval:
    above it a seeded sample of users keeps all its lists (`users_within_lists`); the returned
    `users_total` / `users_kept` say whether it cut."""
    t = retriever.cfg
    pairs = con.execute("SELECT user_id, item_id, ts, split FROM interaction_splits").df()
    cuts = ranking_cuts(pairs, label_share, train_cuts)
    users_total, lists_total = cuts.user_id.nunique(), len(cuts)
    kept = users_within_lists(cuts, max_lists, seed)
    if len(kept) < users_total:
        pairs = pairs[pairs.user_id.isin(kept)]
        cuts = cuts[cuts.user_id.isin(kept)].reset_index(drop=True)
        if log:
            log(
                f"ranking_candidates: {lists_total:,} lists over {users_total:,} users exceed max_lists "
                f"{max_lists:,}: a seeded sample of {len(kept):,} users keeps {len(cuts):,} lists"
            )
    known = known_pairs(pairs, cuts)
    catalog, _, _ = load_catalog(con, n_hashes=t.n_hashes, item_buckets=t.item_buckets)
    items = item_vectors(retriever, catalog, log=log)  # (N, d)
    train_items = items if train_retriever is None else item_vectors(train_retriever, catalog, log=log)
    parts, train_users = [], {}
    for (split, cut), c in cuts.groupby(["split", "cut"], sort=True):  # one user row per (split, cut)
        model, xb = (
            (train_retriever, train_items)
            if split == "train" and train_retriever is not None
            else (
                retriever,
                items,
            )
        )
        ev = build_eval_set(
            split,
            known[(known.split == split) & (known.cut == cut)],
            c[["user_id", "target_item"]].rename(columns={"target_item": "item_id"}),
            catalog,
            history_len=t.history_len,
            n_hashes=t.n_hashes,
            user_buckets=t.user_buckets,
        )
        users = user_vectors(model, catalog, ev.user_hash, ev.history)  # (E, d)
        if split == "train":
            train_users[cut] = (ev.user_keys, users)
        pos, val = retrieve(users, xb, ev, n_candidates, log=log)
        rows, ranks = np.nonzero(pos >= 0)
        parts.append(
            pd.DataFrame(
                {
                    "user_id": ev.user_keys[rows],
                    "split": split,
                    "cut": cut,
                    "item_id": catalog.item_ids[pos[rows, ranks]],
                    "retrieval_rank": ranks + 1,
                    "retrieval_score": val[rows, ranks],
                }
            )
        )
    retrieved = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["user_id", "split", "cut", "item_id", "retrieval_rank", "retrieval_score"])
    )
    con.register("ranking_cuts", cuts)
    con.register("retrieved", retrieved)
    con.register("ranking_known", known)
    try:
        sql = run_sql(con, "ranking_candidates")
    finally:
        con.unregister("ranking_cuts")
        con.unregister("retrieved")
        con.unregister("ranking_known")
    if train_users:  # the exposures retrieval missed get the retriever's score too (as of their cut)
        missed = con.execute(
            "SELECT user_id, cut, item_id FROM ranking_candidates WHERE split = 'train' AND NOT retrieved"
        ).df()
        s = np.full(len(missed), np.nan, dtype=np.float32)
        for cut, (keys, vectors) in train_users.items():
            at = np.flatnonzero(missed["cut"].to_numpy() == cut)
            u = pd.Index(keys).get_indexer(missed["user_id"].to_numpy()[at])
            i = catalog.index_of(missed["item_id"].iloc[at])
            ok = (u >= 0) & (i >= 0)
            s[at[ok]] = (vectors[u[ok]] * train_items[i[ok]]).sum(-1).numpy()
        missed_scores = missed.assign(score=s)  # noqa: F841 (read by DuckDB)
        con.register("missed_scores", missed_scores)
        try:
            con.execute(
                "UPDATE ranking_candidates r SET retrieval_score = m.score FROM missed_scores m "
                "WHERE r.split = 'train' AND NOT r.retrieved AND r.user_id = m.user_id "
                "AND r.cut = m.cut AND r.item_id = m.item_id"
            )
        finally:
            con.unregister("missed_scores")
    counts = dict(con.execute("SELECT split, count(*) FROM ranking_candidates GROUP BY 1").fetchall())
    users = dict(con.execute("SELECT split, count(DISTINCT user_id) FROM ranking_candidates GROUP BY 1").fetchall())
    lists = dict(
        con.execute("SELECT split, count(DISTINCT (user_id, cut)) FROM ranking_candidates GROUP BY 1").fetchall()
    )
    hits = dict(
        con.execute(
            "SELECT split, avg(has::INT) FROM (SELECT user_id, split, cut, bool_or(is_target) AS has "
            "FROM ranking_candidates WHERE retrieved GROUP BY 1, 2, 3) GROUP BY 1"
        ).fetchall()
    )
    return {
        "sql": sql,
        "rows": counts,
        "users": users,
        "lists": lists,
        "target_retrieved": hits,
        "users_total": int(users_total),
        "users_kept": int(len(kept)),
        "lists_total": int(lists_total),
    }


# the latest H exposures with an action before each cut's target, by the one history rule
# (models/splits/history.py: e the exposure, c the cut); a NULL cut: all of them, for serving
HISTORY_SQL = f"""
SELECT user_id, split, cut, item_id, action_mask, epoch(ts)::DOUBLE AS t, pos FROM (
    SELECT c.user_id, c.split, c.cut, e.item_id, e.action_mask, e.ts,
           row_number() OVER (PARTITION BY c.user_id, c.split, c.cut ORDER BY e.ts DESC, e.item_id DESC) - 1 AS pos
    FROM history_groups c
    JOIN action_labels e ON e.user_id = c.user_id AND (c.cut_ts IS NULL OR {BEFORE_TARGET_SQL})
    WHERE e.action_mask <> 0)
WHERE pos < $h"""


@dataclass
class History:
    """Left-padded histories, latest last: hashed items, multi-hot actions, validity; the item
    ids and the latest event's time feed the candidate features (models/ranking/features.py)."""

    item_hash: torch.Tensor  # (G, H, n_hashes)
    actions: torch.Tensor  # (G, H, A)
    valid: torch.Tensor  # (G, H) bool
    item_ids: np.ndarray | None = None  # (G, H) object, "" = padding
    last_t: np.ndarray | None = None  # (G,) seconds of the latest history event, NaN = none


def load_histories(
    con, groups: pd.DataFrame, *, history_len: int, n_actions: int, n_hashes: int, item_buckets: int
) -> History:
    """groups: user_id, split, cut_ts and target_item (the cut's target pair; NaT / None = no cut,
    every exposure), optional cut (0 when absent), one row per (user_id, split, cut) -> their
    histories in row order."""
    g = groups.assign(
        cut=groups["cut"] if "cut" in groups else 0,
        target_item=groups["target_item"] if "target_item" in groups else None,
    )[["user_id", "split", "cut", "cut_ts", "target_item"]]
    g = g.reset_index(drop=True)
    con.register("history_groups", g)
    try:
        h = con.execute(HISTORY_SQL, {"h": history_len}).df()
    finally:
        con.unregister("history_groups")
    key = ["user_id", "split", "cut"]
    row = (
        pd.MultiIndex.from_frame(g[key]).get_indexer(pd.MultiIndex.from_frame(h[key]))
        if len(h)
        else np.empty(0, np.int64)
    )
    G, H = len(g), history_len
    items = np.full((G, H), "", dtype=object)
    masks = np.zeros((G, H), dtype=np.int64)
    valid = np.zeros((G, H), dtype=bool)
    col = H - 1 - h["pos"].to_numpy(dtype=np.int64)
    items[row, col], masks[row, col], valid[row, col] = h["item_id"].to_numpy(object), h["action_mask"].to_numpy(), True
    last_t = np.full(G, np.nan)
    latest = h["pos"].to_numpy() == 0
    last_t[row[latest]] = h["t"].to_numpy(float)[latest]
    return History(
        hashed(items, n_hashes, item_buckets, valid),
        torch.as_tensor(mask_to_multihot(masks, n_actions)),
        torch.as_tensor(valid),
        items,
        last_t,
    )


def hashed(ids: np.ndarray, n_hashes: int, buckets: int, valid: np.ndarray) -> torch.Tensor:
    """(...,) string ids -> (..., n_hashes) buckets; invalid slots get bucket 0 (padding)."""
    flat = np.asarray(ids, dtype=object).ravel()
    out = np.zeros((len(flat), n_hashes), dtype=np.int64)
    ok = np.asarray(valid).ravel()
    if ok.any():
        out[ok] = hash_buckets(flat[ok], n_hashes, buckets)
    return torch.as_tensor(out.reshape(*np.shape(ids), n_hashes))


@dataclass
class RankingSet:
    """One row per (user, split, cut): user, history and the candidate list, padded to C slots
    (a train set has up to train_cuts rows per user, valid and test one)."""

    user_ids: np.ndarray  # (G,) object
    user_hash: torch.Tensor  # (G, n_hashes)
    history: History
    item_ids: np.ndarray  # (G, C) object, "" = padding
    cand_hash: torch.Tensor  # (G, C, n_hashes)
    cand_valid: torch.Tensor  # (G, C) bool
    labels: torch.Tensor  # (G, C, A) multi-hot
    is_target: torch.Tensor  # (G, C) bool
    retrieved: torch.Tensor  # (G, C) bool
    retrieval_score: torch.Tensor  # (G, C) float, -inf where not retrieved
    features: torch.Tensor | None = None  # (G, C, F) candidate features (models/ranking/features.py)

    def __len__(self) -> int:
        return len(self.user_ids)

    def sample(self, n: int, seed: int = 0) -> "RankingSet":
        """A seeded sample of n users (all when n is 0 or covers the set), in row order."""
        if not n or n >= len(self):
            return self
        r = torch.as_tensor(np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False)))
        h = self.history
        return RankingSet(
            self.user_ids[r.numpy()],
            self.user_hash[r],
            History(
                h.item_hash[r],
                h.actions[r],
                h.valid[r],
                None if h.item_ids is None else h.item_ids[r.numpy()],
                None if h.last_t is None else h.last_t[r.numpy()],
            ),
            self.item_ids[r.numpy()],
            self.cand_hash[r],
            self.cand_valid[r],
            self.labels[r],
            self.is_target[r],
            self.retrieved[r],
            self.retrieval_score[r],
            None if self.features is None else self.features[r],
        )


def load_ranking_set(con, split: str, cfg, users=None, timeline: ItemTimeline | None = None, log=None) -> RankingSet:
    """The ranking_candidates rows of `split` as tensors for a RankerConfig `cfg`, with the
    candidate features as of each user's cut when cfg.n_features (`timeline`: the item events,
    read from the warehouse when not given); `log` gets what it is doing and progress lines."""
    t0 = time.perf_counter()
    df = con.execute(
        "SELECT user_id, cut, item_id, retrieval_score, retrieved, action_mask, is_target, cut_ts, target_item "
        "FROM ranking_candidates WHERE split = $s ORDER BY user_id, cut, retrieved DESC, retrieval_rank, "
        "item_id",
        {"s": split},
    ).df()
    if users is not None:
        df = df[df.user_id.isin(set(users))]
    if df.empty:
        raise ValueError(f"ranking_candidates has no {split!r} rows: materialize ranking_candidates first")
    heads = df.drop_duplicates(["user_id", "cut"])  # one row per list, in (user_id, cut) order
    codes = pd.MultiIndex.from_frame(heads[["user_id", "cut"]]).get_indexer(
        pd.MultiIndex.from_frame(df[["user_id", "cut"]])
    )
    user_ids = heads["user_id"].to_numpy(object)
    slot = df.groupby(codes).cumcount().to_numpy()
    G, C = len(heads), int(slot.max()) + 1
    A = cfg.n_actions
    item_ids = np.full((G, C), "", dtype=object)
    valid = np.zeros((G, C), dtype=bool)
    masks = np.zeros((G, C), dtype=np.int64)
    target = np.zeros((G, C), dtype=bool)
    retrieved = np.zeros((G, C), dtype=bool)
    score = np.full((G, C), -np.inf, dtype=np.float32)
    item_ids[codes, slot], valid[codes, slot] = df["item_id"].to_numpy(object), True
    masks[codes, slot] = df["action_mask"].to_numpy()
    target[codes, slot] = df["is_target"].to_numpy(bool)
    retrieved[codes, slot] = df["retrieved"].to_numpy(bool)
    score[codes, slot] = df["retrieval_score"].fillna(-np.inf).to_numpy(np.float32)
    groups = pd.DataFrame(
        {
            "user_id": user_ids,
            "split": split,
            "cut": heads["cut"].to_numpy(),
            "cut_ts": heads["cut_ts"].to_numpy(),
            "target_item": heads["target_item"].to_numpy(object),
        }
    )
    hist = load_histories(
        con, groups, history_len=cfg.history_len, n_actions=A, n_hashes=cfg.n_hashes, item_buckets=cfg.item_buckets
    )
    if log:
        log(
            f"ranking set {split!r}: {G:,} lists x {C} candidates and their histories read in "
            f"{time.perf_counter() - t0:.0f} s"
        )
    users = np.asarray(user_ids, dtype=object)
    features = None
    if getattr(cfg, "n_features", 0):
        timeline = timeline or ItemTimeline.from_warehouse(con, log=log)
        t = (groups["cut_ts"].astype("datetime64[us]").astype("int64") // 10**6).to_numpy(np.int64)
        f = features_for(
            timeline, t, users, item_ids, valid, score, hist.item_ids, hist.valid.numpy(), hist.last_t, log=log
        )
        features = torch.as_tensor(f)
        if log:
            log(f"ranking set {split!r}: candidate features in {time.perf_counter() - t0:.0f} s since the start")
    return RankingSet(
        users,
        torch.as_tensor(hash_buckets(users, cfg.n_hashes, cfg.user_buckets)),
        hist,
        item_ids,
        hashed(item_ids, cfg.n_hashes, cfg.item_buckets, valid),
        torch.as_tensor(valid),
        torch.as_tensor(mask_to_multihot(masks, A)),
        torch.as_tensor(target),
        torch.as_tensor(retrieved),
        torch.as_tensor(score),
        features,
    )
