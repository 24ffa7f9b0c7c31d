"""Candidate features: what a ranker over a retriever knows that the retriever cannot use.

The two-tower scores a (user, item) pair from ids, content and the user's recent items, with no
notion of *when* it is asked. A ranker is asked at a time t (the cut: the held-out event's time
offline, "now" when serving) and reads, per candidate:

- ``retrieval_score``, ``log_retrieval_rank``: the retriever's opinion and its place in the list;
- ``log_pop``, ``log_pop_365d``, ``log_pop_30d``: the item's positive events before t, all time,
  in the year and in the month before t (popularity and its trend, as of t);
- ``log_age_days``: days since the item's first positive event before t (0: none yet);
- ``release_gap``: (year of t - the item's release year) / 10, 0 where unknown;
- ``log_user_gap_hours``: hours since the user's latest history event (the same for every
  candidate of a user; it lets the other features weigh differently for a returning user);
- ``category_affinity``: the share of the user's history items that share a category with the
  candidate; ``year_distance``: |the candidate's year - the history's mean year| / 10;
- ``cooc_last1``, ``cooc_last5``, ``cooc_last32``: how often other users who took the user's
  latest 1 / 5 / 32 history items also took the candidate (item-item cosine over the train
  period's positive pairs, summed over those history items, log1p) -- a cross feature between
  candidate and history that a two-tower's dot product cannot form, and the one that carries the
  next-item signal on MovieLens (see the README's ranking figures).

Every count is of events strictly before t, so a feature never reads the label window (a test
checks it on a real DuckDB table). Co-occurrences come from the pairs the retriever trained on
(interaction_splits' train split) with the user's own pairs taken out, so a train row's label
window never counts for its own candidates. Offline, `ItemTimeline` answers "as of t" for any t; a
served ranker reads an `ItemSnapshot` (the same counts as of the data's last event, saved with
the checkpoint) because the HTTP service never opens the warehouse. One function,
`candidate_features`, turns either into the feature matrix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from models.progress import Progress
from models.retrieval.data import id_index
import scipy.sparse as sp

FEATURES = (
    "retrieval_score",
    "log_retrieval_rank",
    "log_pop",
    "log_pop_365d",
    "log_pop_30d",
    "log_age_days",
    "release_gap",
    "log_user_gap_hours",
    "category_affinity",
    "year_distance",
    "cooc_last1",
    "cooc_last5",
    "cooc_last32",
)
COOC_LAST = (1, 5, 32)  # the history items each cooc_last* feature sums over
COOC_BLOCK = 64  # rows whose co-occurrences are counted together (CoOccurrence.scores)
N_FEATURES = len(FEATURES)
FEATURE_FILE = "item_features.npz"  # the item snapshot beside a ranker checkpoint
DAY = 86_400
WINDOWS = (365 * DAY, 30 * DAY)  # the trend windows of log_pop_365d, log_pop_30d

# positive events per item (the popularity the features count), and each item's content
EVENTS_SQL = "SELECT item_id, epoch(ts)::BIGINT AS t FROM clean_interactions WHERE is_positive"
ITEMS_SQL = "SELECT item_id, categories, year FROM clean_items"
# the pairs co-occurrence counts: the train period's positive pairs (what the retriever trained on)
PAIRS_SQL = "SELECT DISTINCT user_id, item_id FROM interaction_splits WHERE split = 'train'"


@dataclass
class ItemCounts:
    """Per candidate, as of its user's time t: positive events before t (all time and per
    trend window), the first one's time (NaN: none), release year and categories."""

    total: np.ndarray  # (...,) float
    windows: tuple[np.ndarray, ...]  # one (...,) per WINDOWS entry
    first_t: np.ndarray  # (...,) float seconds, NaN = no event before t
    year: np.ndarray  # (...,) float, NaN = unknown
    categories: np.ndarray  # (..., K) bool


@dataclass
class ItemContent:
    """Release year and category multi-hot per item id (unknown items: no year, no category)."""

    index: pd.Index
    year: np.ndarray  # (N,) float, NaN = unknown
    categories: np.ndarray  # (N, K) bool

    @classmethod
    def from_frame(cls, items: pd.DataFrame) -> "ItemContent":
        cats = [list(c) if isinstance(c, (list, tuple, np.ndarray)) else [] for c in items["categories"]]
        names = sorted({c for cs in cats for c in cs})
        col = {c: j for j, c in enumerate(names)}
        m = np.zeros((len(cats), len(names)), dtype=bool)
        for r, cs in enumerate(cats):
            m[r, [col[c] for c in cs]] = True
        year = pd.to_numeric(items["year"], errors="coerce").to_numpy(float)
        return cls(id_index(items["item_id"]), year, m)

    def __post_init__(self) -> None:
        # id -> position as a dict: a served request looks up ~230 ids, where an index lookup costs more
        self._pos = {k: i for i, k in enumerate(self.index)}

    def positions(self, ids) -> np.ndarray:
        """ids (...,) -> positions in the content (-1 unknown), same shape."""
        flat = np.asarray(ids, dtype=object).ravel()
        get = self._pos.get
        return np.fromiter((get(k, -1) for k in flat), dtype=np.int64, count=len(flat)).reshape(np.shape(ids))

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ids (...,) -> positions (-1 unknown), years (NaN unknown), categories (..., K)."""
        flat = np.asarray(ids, dtype=object).ravel()
        pos = self.positions(flat)
        year = np.where(pos >= 0, self.year[pos], np.nan)
        cats = np.where((pos >= 0)[:, None], self.categories[pos], False)
        shape = np.shape(ids)
        return pos.reshape(shape), year.reshape(shape), cats.reshape(*shape, -1)


@dataclass
class ItemTimeline:
    """Every positive event's time per item, for counts "before t" at any t (offline)."""

    content: ItemContent
    keys: np.ndarray  # (M,) int64 sorted: item position << 34 | (t - t0)
    starts: np.ndarray  # (N + 1,) the first key of each item position
    t0: int
    t_end: int  # the last event's time: what a snapshot is as of
    cooc: "CoOccurrence | None" = None

    @classmethod
    def from_warehouse(cls, con, log=None) -> "ItemTimeline":
        t0 = time.perf_counter()
        ev = con.execute(EVENTS_SQL).df()
        items = con.execute(ITEMS_SQL).df()
        pairs = con.execute(PAIRS_SQL).df()
        known = set(items["item_id"])
        extra = pd.DataFrame({"item_id": sorted((set(ev["item_id"]) | set(pairs["item_id"])) - known)})
        content = ItemContent.from_frame(pd.concat([items, extra.assign(categories=None, year=None)]))
        tl = cls.build(content, ev["item_id"].to_numpy(object), ev["t"].to_numpy(np.int64))
        tl.cooc = CoOccurrence.build(
            content.index, pairs["user_id"].to_numpy(object), pairs["item_id"].to_numpy(object)
        )
        if log:
            log(
                f"item timeline: {len(ev):,} positive events, {len(content.index):,} items, {len(pairs):,} "
                f"train pairs in {time.perf_counter() - t0:.0f} s"
            )
        return tl

    @classmethod
    def build(cls, content: ItemContent, item_ids: np.ndarray, t: np.ndarray) -> "ItemTimeline":
        pos = content.index.get_indexer(pd.Series(item_ids, dtype=object))
        if (pos < 0).any():
            raise ValueError(f"events of items missing from the item content: {item_ids[pos < 0][:5]}")
        t0 = int(t.min()) if len(t) else 0
        if len(t) and int(t.max()) - t0 >= 1 << 34:
            raise ValueError("event times span more than 2^34 s (544 years): check the ts column")
        keys = np.sort((pos.astype(np.int64) << 34) | (t - t0))
        starts = np.searchsorted(keys, np.arange(len(content.index) + 1, dtype=np.int64) << 34)
        return cls(content, keys, starts, t0, int(t.max()) if len(t) else 0)

    def _before(self, pos: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Events of item positions `pos` strictly before times t (same shape; pos < 0 -> 0)."""
        p = np.maximum(pos, 0)
        rel = np.clip(t - self.t0, 0, (1 << 34) - 1).astype(np.int64)
        n = np.searchsorted(self.keys, (p.astype(np.int64) << 34) | rel) - self.starts[p]
        n = np.where(t - self.t0 <= 0, 0, n)
        return np.where(pos >= 0, n, 0).astype(np.float64)

    def counts(self, ids: np.ndarray, t: np.ndarray) -> ItemCounts:
        """ids (G, C) item ids, t (G,) seconds -> their counts as of each row's t."""
        pos, year, cats = self.content.lookup(ids)
        tt = np.broadcast_to(np.asarray(t, dtype=np.int64)[:, None], pos.shape)
        total = self._before(pos, tt)
        windows = tuple(total - self._before(pos, tt - w) for w in WINDOWS)
        p = np.maximum(pos, 0)
        first = np.where(
            (total > 0) & (pos >= 0),
            self.t0 + (self.keys[np.minimum(self.starts[p], len(self.keys) - 1)] & ((1 << 34) - 1)),
            np.nan,
        )
        return ItemCounts(total, windows, first.astype(np.float64), year, cats)

    def snapshot(self) -> "ItemSnapshot":
        """The counts of every item as of just after the last event (what serving reads)."""
        ids = np.asarray(self.content.index, dtype=object)
        c = self.counts(ids[None, :], np.array([self.t_end + 1]))
        return ItemSnapshot(
            self.content,
            c.total[0],
            tuple(w[0] for w in c.windows),
            c.first_t[0],
            self.t_end + 1,
            self.cooc,
        )


@dataclass
class ItemSnapshot:
    """Every item's counts as of one time `t` (serving: the ranker's data as it was trained)."""

    content: ItemContent
    total: np.ndarray  # (N,)
    windows: tuple[np.ndarray, ...]
    first_t: np.ndarray  # (N,) NaN = none
    t: int
    cooc: "CoOccurrence | None" = None

    def counts(self, ids: np.ndarray) -> ItemCounts:
        pos, year, cats = self.content.lookup(ids)
        p = np.maximum(pos, 0)
        ok = pos >= 0
        return ItemCounts(
            np.where(ok, self.total[p], 0.0),
            tuple(np.where(ok, w[p], 0.0) for w in self.windows),
            np.where(ok, self.first_t[p], np.nan),
            year,
            cats,
        )

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            item_ids=np.asarray(self.content.index, dtype=str),
            year=self.content.year,
            categories=self.content.categories,
            total=self.total,
            windows=np.stack(self.windows) if self.windows else np.zeros((0, len(self.total))),
            first_t=self.first_t,
            t=np.array([self.t]),
            **({} if self.cooc is None else self.cooc.arrays()),
        )

    @classmethod
    def load(cls, path: Path) -> "ItemSnapshot":
        z = np.load(path, allow_pickle=False)
        content = ItemContent(id_index(z["item_ids"]), z["year"], z["categories"])
        cooc = CoOccurrence.from_arrays(z) if "cooc_users" in z else None
        return cls(content, z["total"], tuple(z["windows"]), z["first_t"], int(z["t"][0]), cooc)


@dataclass
class CoOccurrence:
    """The train period's (user, item) positive pairs as a sparse users x items matrix over the
    item content's positions: item-item co-occurrence among other users, on demand."""

    users: pd.Index
    X: sp.csr_matrix  # (U, N) 0/1
    inv_sqrt: np.ndarray  # (N,) 1 / sqrt(users per item), 0 for none

    def __post_init__(self) -> None:
        self.XT = self.X.T.tocsr()  # (N, U): built once, not per request
        self._row = {u: i for i, u in enumerate(self.users)}

    @classmethod
    def build(cls, items: pd.Index, user_ids: np.ndarray, item_ids: np.ndarray) -> "CoOccurrence":
        users = pd.Index(sorted(set(user_ids)))
        cols = items.get_indexer(pd.Series(item_ids, dtype=object))
        ok = cols >= 0
        X = sp.csr_matrix(
            (np.ones(int(ok.sum()), np.float32), (users.get_indexer(user_ids[ok]), cols[ok])),
            shape=(len(users), len(items)),
        )
        X.data[:] = 1.0  # a repeated pair counts once
        n = np.asarray(X.sum(0)).ravel()
        return cls(users, X, np.where(n > 0, 1 / np.sqrt(np.maximum(n, 1)), 0.0).astype(np.float32))

    def arrays(self) -> dict:
        return {
            "cooc_users": np.asarray(self.users, dtype=str),
            "cooc_indptr": self.X.indptr,
            "cooc_indices": self.X.indices,
            "cooc_inv_sqrt": self.inv_sqrt,
        }

    @classmethod
    def from_arrays(cls, z) -> "CoOccurrence":
        n_items = len(z["cooc_inv_sqrt"])
        indices = z["cooc_indices"]
        X = sp.csr_matrix(
            (np.ones(len(indices), np.float32), indices, z["cooc_indptr"]), shape=(len(z["cooc_users"]), n_items)
        )
        return cls(id_index(z["cooc_users"]), X, z["cooc_inv_sqrt"])

    def scores(
        self, user_ids, hist_pos: np.ndarray, hist_valid: np.ndarray, cand_pos: np.ndarray, log=None
    ) -> np.ndarray:
        """(G, C, len(COOC_LAST)): per user and candidate, log1p of sum over the latest k history
        items h of cos(h, c) = users(h and c) / sqrt(users(h) users(c)), the user's own pairs
        taken out. hist_pos / cand_pos: item positions (G, H) / (G, C), -1 = none."""
        G, H = hist_pos.shape
        C, N = cand_pos.shape[1], self.X.shape[1]
        K = min(max(COOC_LAST), H)  # the history slots any feature reads (the latest)
        out = np.zeros((G, C, len(COOC_LAST)), dtype=np.float32)
        urow = np.fromiter((self._row.get(u, -1) for u in np.asarray(user_ids, dtype=object)), np.int64, G)
        # per block of rows, the co-occurrence counts of its distinct history items with its distinct
        # candidates alone (never X @ H, which reads every pair, nor a dense (users, N) block: at 1M
        # items that took ~130 ms per served user). A user's train cuts are adjacent rows sharing
        # most of their history and candidates, so a block of 64 rows counts each pair once where
        # a row at a time counted it once per cut: at 10M events the row-at-a-time products were
        # most of ranking_model's minutes of loading.
        progress = Progress("co-occurrence features", G, "lists", log)
        for s in range(0, G, COOC_BLOCK):
            e = min(G, s + COOC_BLOCK)
            g, b = np.arange(s, e), e - s
            cp = np.maximum(cand_pos[g], 0)
            cu, at = np.unique(cp, return_inverse=True)  # (Cu,) distinct candidates; (b, C) -> their column
            at = at.reshape(cp.shape)
            known = urow[g] >= 0
            own_rows = self.X[np.maximum(urow[g], 0)]  # (b, N) the user's pairs (row 0 for unknown users)
            own_c = own_rows[:, cu].toarray() * known[:, None]  # (b, Cu)
            hp = hist_pos[g, H - K :]
            hv = hist_valid[g, H - K :] & (hp >= 0)
            hu = np.unique(hp[hv])  # (Hu,) distinct history items
            slot = np.minimum(np.searchsorted(hu, hp), max(len(hu) - 1, 0))  # (b, K) -> their row
            w = np.where(hv, self.inv_sqrt[np.maximum(hp, 0)], 0.0).astype(np.float32)  # (b, K) 1 / sqrt(users(h))
            both = (self.XT[hu] @ self.XT[cu].T).toarray()  # (Hu, Cu) users who took both h and c
            # the user's own pairs: in both h's and c's users when the user holds both
            own_keys = np.repeat(np.arange(b), np.diff(own_rows.indptr)) * N + own_rows.indices
            mine = np.isin(np.arange(b)[:, None] * N + np.maximum(hp, 0), own_keys) & hv & known[:, None]
            rows = np.repeat(np.arange(b), K).reshape(b, K)
            for j, k in enumerate(COOC_LAST):
                lo = max(0, K - k)
                Wh = np.zeros((b, max(len(hu), 1)), np.float32)  # (b, Hu) each row's weight on each history item
                np.add.at(Wh, (rows[:, lo:].ravel(), slot[:, lo:].ravel()), w[:, lo:].ravel())
                share = (w[:, lo:] * mine[:, lo:]).sum(1)  # (b,) the user's own share of each h's users
                S = (Wh[:, : len(hu)] @ both - own_c * share[:, None]) * self.inv_sqrt[cu][None, :]  # (b, Cu)
                out[g, :, j] = np.log1p(np.maximum(np.take_along_axis(S, at, 1), 0.0)) * (cand_pos[g] >= 0)
            progress.update(b)
        return out


def candidate_features(
    counts: ItemCounts,
    t: np.ndarray,
    retrieval_score: np.ndarray,
    cand_valid: np.ndarray,
    hist_ids: np.ndarray,
    hist_valid: np.ndarray,
    last_t: np.ndarray,
    content: ItemContent,
    cooc: np.ndarray | None = None,
) -> np.ndarray:
    """(G, C, N_FEATURES) float32, in FEATURES order, for G users' C candidates at times t (G,).

    counts: the candidates' ItemCounts as of t; retrieval_score (G, C) (-inf / NaN: not
    retrieved, e.g. a training exposure retrieval missed: rank C + 1); hist_ids / hist_valid
    (G, H): the user's history items; last_t (G,): the latest history event's time (NaN: none);
    cooc (G, C, len(COOC_LAST)): CoOccurrence.scores (zeros when None)."""
    G, C = cand_valid.shape
    assert counts.total.shape == (G, C) and hist_ids.shape[0] == G, (counts.total.shape, hist_ids.shape)
    t = np.asarray(t, dtype=np.float64)
    score = np.asarray(retrieval_score, dtype=np.float64)
    finite = np.isfinite(score) & cand_valid
    # rank within the retrieved list: 1 + the retrieved candidates scoring higher
    s = np.where(finite, score, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(1, C + 1)[None, :].repeat(G, 0), axis=1)
    rank = np.where(finite, rank, finite.sum(1, keepdims=True) + 1)
    age = np.where(np.isnan(counts.first_t), 0.0, (t[:, None] - counts.first_t) / DAY)
    t_year = 1970 + t / (365.2425 * DAY)  # (G,)
    release = np.where(np.isnan(counts.year), 0.0, (t_year[:, None] - counts.year) / 10)
    gap = np.where(np.isnan(last_t), 0.0, np.log1p(np.maximum(t - last_t, 0) / 3600))  # (G,)
    # content against the history: category overlap share, distance to the history's mean year
    _, h_year, h_cats = content.lookup(hist_ids)  # (G, H), (G, H, K)
    h_cats = h_cats & hist_valid[..., None]
    shared = np.einsum("gck,ghk->gch", counts.categories.astype(np.float32), h_cats.astype(np.float32)) > 0
    n_hist = np.maximum(hist_valid.sum(1), 1)[:, None]  # (G, 1)
    affinity = shared.sum(-1) / n_hist  # (G, C)
    hv = hist_valid & ~np.isnan(h_year)  # history items with a known year
    n_y = hv.sum(1)  # (G,)
    mean_year = np.where(hv, h_year, 0.0).sum(1) / np.maximum(n_y, 1)  # (G,)
    ydist = np.where((n_y > 0)[:, None] & ~np.isnan(counts.year), np.abs(counts.year - mean_year[:, None]) / 10, 0.0)
    out = np.stack(
        [
            np.where(finite, score, 0.0),
            np.log(rank),
            np.log1p(counts.total),
            *(np.log1p(w) for w in counts.windows),
            np.log1p(np.maximum(age, 0.0)),
            release,
            np.broadcast_to(gap[:, None], (G, C)),
            affinity,
            ydist,
            *(np.zeros((G, C)) if cooc is None else cooc[..., j] for j in range(len(COOC_LAST))),
        ],
        axis=-1,
    )  # (G, C, F)
    return np.where(cand_valid[..., None], out, 0.0).astype(np.float32)


def features_for(
    source: "ItemTimeline | ItemSnapshot",
    t: np.ndarray,
    user_ids: np.ndarray,
    cand_ids: np.ndarray,
    cand_valid: np.ndarray,
    retrieval_score: np.ndarray,
    hist_ids: np.ndarray,
    hist_valid: np.ndarray,
    last_t: np.ndarray,
    log=None,
) -> np.ndarray:
    """The (G, C, N_FEATURES) features of G users' candidates: offline from an ItemTimeline as of
    each user's t (G,), served from an ItemSnapshot as of its own time (t is then the snapshot's);
    `log` gets progress lines of the long part (the co-occurrences)."""
    counts = source.counts(cand_ids, t) if isinstance(source, ItemTimeline) else source.counts(cand_ids)
    if source.cooc is None:
        raise ValueError("the item features hold no co-occurrences: build them with ItemTimeline.from_warehouse")
    pos = source.content.positions
    hv = np.asarray(hist_valid, dtype=bool)
    cooc = source.cooc.scores(
        user_ids, np.where(hv, pos(hist_ids), -1), hv, np.where(cand_valid, pos(cand_ids), -1), log=log
    )
    return candidate_features(counts, t, retrieval_score, cand_valid, hist_ids, hv, last_t, source.content, cooc)
