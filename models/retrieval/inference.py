"""The one retrieval rule every way of answering uses: history + recent items -> user vector ->
nearest items, seen items excluded, popular items for a caller with neither (no Dagster, no
warehouse, no FAISS import: the index is whatever object offers `search`, `rows_of`, `items_of`).

The CLI and the batch assets (models/serving/recommender.py, over the warehouse), the HTTP
service (models/serving/snapshot.py, over the published artifacts), the MLflow pyfunc
(models/retrieval/pyfunc.py, over its bundle) and the generative retriever's serving path
(models/generative/serving.py, popularity and histories only) are adapters: they load a model,
a catalog, an index and the user histories (models/retrieval/histories.py: sql/user_histories.sql
and sql/item_popularity.sql, from the warehouse or from the published artifact), and ask a
`Retriever`. The rule:

- **Known user** (in the histories): the user tower over the hashed user id and the last
  `history_len` of the user's items (oldest first) followed by the request's recent items.
  Without recent items that vector changes only when the model, the catalog's features or the
  histories do, so a `Retriever` computes it once per user (`UserVectorCache`; all at once with
  `warm_user_vectors`) and a request then costs the search alone.
- **Session** (unknown or no user id, recent items the index holds): the items nearest to the
  mean of the recent items' indexed vectors (unit length), the item space `similar` searches:
  a session of similar items gets items like them. Not the user tower: on the demo's planted
  world (models/sources/synthetic.py: 16 taste clusters), 31 sessions of three items of one
  cluster through the user tower (its id part padding) got on average 44% of their top 10 in
  that cluster and 44% from the 10 most popular items (i0729 first for i0007's neighbours);
  the item-space mean got 100% and 0%. The cause is the model, not the session path: a trained user's id instead of
  the padding did worse (20-24%), the mean trained user id the same (43%), plain means instead
  of the learned recency weights the same (42%). Trained on whole histories, the tower maps a
  short, id-less history to "what users go on to like", which leans to popular items.
  Recent items the catalog knows but the index does not hold yet fall back to the user tower.
- **Popularity** (neither): the most popular items (sql/item_popularity.sql's pair counts as
  scores), flagged as the fallback.
- **Excluded** from every answer: everything the known user interacted with, the recent items,
  and the request's `exclude` list (`search_excluding_seen` for vector answers).
- Recent items the catalog does not hold are ignored (no features to embed) and reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from models.retrieval.data import Catalog, hash_buckets, id_index
from models.retrieval.evaluation import item_vectors
from models.retrieval.histories import UserHistories

USER_BATCH = 2048  # user-tower forward batch for many users (the batch assets)


class ServingError(ValueError):
    """Artifacts that cannot be served together, or a request that cannot be answered."""


def embed_items(model, catalog: Catalog, log=None) -> np.ndarray:
    """(N, d) float32 unit vectors for every catalog item; an item whose id was never trained
    (the catalog's rule) is embedded by its content features alone, its id part zero."""
    return item_vectors(model, catalog, log=log).numpy().astype(np.float32)


def search_excluding_seen(index, xq: np.ndarray, seen: list[np.ndarray], k) -> tuple[np.ndarray, np.ndarray]:
    """Top-k index rows per query with each query's `seen` rows removed: (nq, max k) scores and
    rows, -inf / -1 padded. `k` is one count or one per query (a query's row is cut at its own)."""
    nq = len(xq)
    ks = np.broadcast_to(np.asarray(k, dtype=np.int64), (nq,))
    k_max = int(ks.max()) if nq else 0
    extra = max((len(s) for s in seen), default=0)
    out_d = np.full((nq, k_max), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k_max), -1, dtype=np.int64)
    if not nq:
        return out_d, out_i
    D, I = index.search(np.ascontiguousarray(xq, dtype=np.float32), k_max + extra)
    for q in range(nq):
        keep = (I[q] >= 0) & ~np.isin(I[q], seen[q])
        ids, ds = I[q][keep][: ks[q]], D[q][keep][: ks[q]]
        out_i[q, : len(ids)], out_d[q, : len(ds)] = ids, ds
    return out_d, out_i


def top_popular(items: np.ndarray, scores: np.ndarray, drop, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first k of a most-popular-first list (index rows or item ids) that are not in `drop`."""
    keep = ~np.isin(items, np.asarray(drop, dtype=items.dtype)) if len(drop) else np.ones(len(items), bool)
    return items[keep][:k], scores[keep][:k]


class ExactIndex:
    """Exact inner-product search over an (N, d) matrix, rows = positions: the index of a
    self-contained model (the MLflow pyfunc), with ItemIndex's search/rows_of/items_of/vector.
    Ties keep the lower row first."""

    kind = "exact"

    def __init__(self, vectors: np.ndarray, item_ids):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.item_ids = np.asarray(item_ids, dtype=object)
        self._index = id_index(self.item_ids)

    def __len__(self) -> int:
        return len(self.item_ids)

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        S = np.asarray(xq, dtype=np.float32) @ self.vectors.T  # (nq, N)
        n = S.shape[1]
        take = min(k, n)
        D = np.full((len(S), k), -np.inf, dtype=np.float32)
        I = np.full((len(S), k), -1, dtype=np.int64)
        if take:
            part = np.argpartition(-S, take - 1, axis=1)[:, :take] if take < n else np.tile(np.arange(n), (len(S), 1))
            for q in range(len(S)):
                cand = part[q]
                order = np.lexsort((cand, -S[q, cand]))  # score descending, then row
                I[q, :take], D[q, :take] = cand[order], S[q, cand[order]]
        return D, I

    def rows_of(self, item_ids) -> np.ndarray:
        return self._index.get_indexer(pd.Series(list(item_ids), dtype=object)).astype(np.int64)

    def items_of(self, rows) -> np.ndarray:
        return self.item_ids[np.asarray(rows, dtype=np.int64)]

    def vector(self, row: int) -> np.ndarray:
        return self.vectors[row]


class HistoryEncoder:
    """User vectors by the rule: a known user's hashed id and last items, then recent items (no
    index needed: also what tunes an index on real user vectors before it serves)."""

    def __init__(
        self, model, catalog: Catalog, histories: UserHistories, *, pair_pos=None, user_hash=None, user_cache=None
    ):
        model.eval()
        self.model, self.catalog, self.histories = model, catalog, histories
        cfg = model.cfg
        self.pair_pos = histories.positions(catalog) if pair_pos is None else pair_pos  # (P,) -1: not in catalog
        self.user_hash = (  # (U, n_hashes): hashing is vectorised, but once per load, not per request
            hash_buckets(histories.user_ids, cfg.n_hashes, cfg.user_buckets) if user_hash is None else user_hash
        )
        # known users' vectors from their histories alone: a function of (model, catalog features,
        # histories) only, all fixed for this object's life, so each is computed once (filled on
        # first use, or all at once by `warm_user_vectors`) and a reload that changes any of the
        # three builds a new encoder with an empty cache. `user_cache` shares a previous encoder's
        # over the same three (the HTTP service's delta-free reload).
        self.user_cache = UserVectorCache(len(histories), cfg.dim) if user_cache is None else user_cache

    def user_row(self, user_id) -> int:
        """The user's row in the histories, -1 for an unknown user (or None)."""
        return -1 if user_id is None else self.histories.row(user_id)

    def own_positions(self, row: int) -> np.ndarray:
        """Catalog positions of a known user's items, oldest first (those the catalog holds)."""
        if row < 0:
            return np.zeros(0, np.int64)
        pos = self.pair_pos[self.histories.offsets[row] : self.histories.offsets[row + 1]]
        return pos[pos >= 0]

    def history(self, row: int, recent_pos: np.ndarray) -> np.ndarray:
        """(L,) left-padded catalog positions: the user's last items, then the session's recent ones."""
        L = self.model.cfg.history_len
        seq = np.concatenate([self.own_positions(row), recent_pos])[-L:]
        out = np.full(L, -1, np.int64)
        if len(seq):
            out[L - len(seq) :] = seq
        return out

    def hashed(self, row: int) -> np.ndarray:
        """The hashed user id of a known user; padding (zeros) for anyone else."""
        return self.user_hash[row] if row >= 0 else np.zeros(self.user_hash.shape[1], np.int64)

    def vectors(self, hashes: np.ndarray, hists: np.ndarray) -> np.ndarray:
        """(B, n_hashes) hashed ids, (B, L) histories -> (B, d) float32 user vectors."""
        out = []
        with torch.inference_mode():
            for s in range(0, len(hists), USER_BATCH):
                out.append(
                    self.model.users(
                        self.catalog,
                        torch.as_tensor(np.asarray(hashes[s : s + USER_BATCH], np.int64)),
                        torch.as_tensor(np.asarray(hists[s : s + USER_BATCH], np.int64)),
                    ).numpy()
                )
        return (
            np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, self.model.cfg.dim), np.float32)
        )

    def tower_user_vectors(self, rows) -> np.ndarray:
        """(B, d) vectors of known users (by row) from their histories alone, through the tower."""
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return np.zeros((0, self.model.cfg.dim), np.float32)
        empty = np.zeros(0, np.int64)
        return self.vectors(np.stack([self.hashed(r) for r in rows]), np.stack([self.history(r, empty) for r in rows]))

    def user_vectors(self, rows) -> np.ndarray:
        """(B, d) vectors of known users (by row) from their histories alone: the tower's, each
        computed once per encoder (`user_cache`) and read from the cache afterwards."""
        rows = np.asarray(rows, np.int64)
        cache = self.user_cache
        missing = np.unique(rows[~cache.filled[rows]])
        for s in range(0, len(missing), USER_BATCH):
            part = missing[s : s + USER_BATCH]
            cache.vectors[part] = self.tower_user_vectors(part)
            cache.filled[part] = True
        return cache.vectors[rows]

    def warm_user_vectors(self) -> int:
        """Compute every known user's vector now (batches of USER_BATCH): afterwards no request
        from a known user without recent items runs the tower. Returns how many were computed."""
        missing = np.flatnonzero(~self.user_cache.filled)
        self.user_vectors(missing)
        return len(missing)


class UserVectorCache:
    """(U, d) float32 user vectors by histories row, and which rows are filled."""

    def __init__(self, n_users: int, dim: int):
        self.vectors = np.zeros((n_users, dim), np.float32)
        self.filled = np.zeros(n_users, bool)


@dataclass
class Candidates:
    """Retrieved items for the known users among those asked (the ranker's input)."""

    user_ids: list  # the known users, in the order asked
    item_ids: np.ndarray  # (B, n) object, "" where fewer than n were found
    scores: np.ndarray  # (B, n) float32 retrieval scores (-inf where none)
    valid: np.ndarray  # (B, n) bool


class Retriever(HistoryEncoder):
    """The rule over one model, catalog, index and set of histories (see the module docstring).

    `index` maps item ids to rows (`rows_of`, `items_of`) and searches (`search(xq, k)` ->
    scores, rows; -1 where fewer); `pair_pos` / `user_hash` may be passed in when a previous
    load computed them for the same catalog / histories (the HTTP service's reload)."""

    def __init__(
        self,
        model,
        catalog: Catalog,
        index,
        histories: UserHistories,
        *,
        pair_pos=None,
        user_hash=None,
        user_cache=None,
    ):
        super().__init__(model, catalog, histories, pair_pos=pair_pos, user_hash=user_hash, user_cache=user_cache)
        self.index = index
        self.row_of_pos = index.rows_of(catalog.item_ids)  # (N,) catalog position -> index row (-1: none)
        pop = index.rows_of(histories.popular_items)
        self.popular_rows = pop[pop >= 0]  # index rows, most popular first
        self.popular_scores = histories.popular_pairs[pop >= 0]

    def with_index(self, index) -> "Retriever":
        """The same users and catalog over another index (a benchmark's exact vs ANN comparison)."""
        return Retriever(
            self.model,
            self.catalog,
            index,
            self.histories,
            pair_pos=self.pair_pos,
            user_hash=self.user_hash,
            user_cache=self.user_cache,
        )

    @property
    def user_ids(self) -> np.ndarray:
        """Every known user, in row order."""
        return self.histories.user_ids

    def knows(self, user_id) -> bool:
        return self.user_row(user_id) >= 0

    def history_items(self, user_id) -> list[str]:
        """The user's items, oldest first ([] for an unknown user)."""
        row = self.user_row(user_id)
        return self.histories.items_of(row).tolist() if row >= 0 else []

    def seen_rows(self, row: int) -> np.ndarray:
        """Index rows of what a known user interacted with (none for -1)."""
        rows = self.row_of_pos[self.own_positions(row)]
        return rows[rows >= 0]

    # -- answers ---------------------------------------------------------------------------

    def answer(self, requests: list[dict]) -> list[dict]:
        """Answers for requests {user_id, k, exclude, recent_items} (the HTTP body's fields; the
        others read `user_id` and `k`, and `recent_items` where they offer it): one user-tower
        forward and one index search for the batch. Each answer: user_id, source ("user",
        "session", "popularity"), fallback, known_user, unknown_recent_items, items [{item_id,
        score}]."""
        out: list[dict] = []
        vec_of, hashes, hists, drops = [], [], [], []
        tower: list[int] = []  # positions in vec_of answered by the user tower
        cached: list[int] = []  # positions in vec_of of known users without recent items (user_cache)
        cached_rows: list[int] = []
        direct: dict[int, np.ndarray] = {}  # position in vec_of -> a session's item-space vector
        for n, r in enumerate(requests):
            row = self.user_row(r.get("user_id"))
            recent = list(r.get("recent_items") or [])
            recent_pos = self.catalog.index_of(recent) if recent else np.zeros(0, np.int64)
            unknown = [i for i, p in zip(recent, recent_pos) if p < 0]
            recent_pos = recent_pos[recent_pos >= 0]
            drop = np.concatenate(
                [self.seen_rows(row), self.row_of_pos[recent_pos], self.index.rows_of(list(r.get("exclude") or []))]
            )
            drop = np.unique(drop[drop >= 0])
            source = "user" if row >= 0 else "session" if len(recent_pos) else "popularity"
            out.append(
                {
                    "user_id": r.get("user_id"),
                    "source": source,
                    "fallback": source == "popularity",
                    "known_user": row >= 0,
                    "unknown_recent_items": unknown,
                }
            )
            if source == "popularity":
                rows, scores = top_popular(self.popular_rows, self.popular_scores, drop, r["k"])
                out[n]["items"] = _items(self.index.items_of(rows), scores)
                continue
            session_rows = self.row_of_pos[recent_pos] if source == "session" else np.zeros(0, np.int64)
            session_rows = session_rows[session_rows >= 0]
            if len(session_rows):
                direct[len(vec_of)] = self.session_vector(session_rows)
            elif not len(recent_pos):  # a known user's vector from the history alone: computed once
                cached.append(len(vec_of))
                cached_rows.append(row)
            else:
                tower.append(len(vec_of))
                hashes.append(self.hashed(row))
                hists.append(self.history(row, recent_pos))
            vec_of.append(n)
            drops.append(drop)
        if vec_of:
            xq = np.zeros((len(vec_of), self.model.cfg.dim), np.float32)  # (B, d)
            if tower:
                xq[tower] = self.vectors(np.stack(hashes), np.stack(hists))
            if cached:
                xq[cached] = self.user_vectors(cached_rows)
            for b, v in direct.items():
                xq[b] = v
            D, I = search_excluding_seen(self.index, xq, drops, [requests[n]["k"] for n in vec_of])
            for b, n in enumerate(vec_of):
                found = I[b] >= 0
                out[n]["items"] = _items(self.index.items_of(I[b][found]), D[b][found])
        return out

    def session_vector(self, rows: np.ndarray) -> np.ndarray:
        """(d,) unit mean of the indexed vectors of a session's items (index rows)."""
        v = np.mean(np.stack([self.index.vector(int(r)) for r in rows]), axis=0)  # (n, d) -> (d,)
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)

    def retrieve(self, rows, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) scores and index rows for known users (by row) with no recent items: what
        `answer` gives them, for many users at once (the batch assets)."""
        rows = np.asarray(rows, np.int64)
        return search_excluding_seen(self.index, self.user_vectors(rows), [self.seen_rows(r) for r in rows], k)

    def candidates(self, user_ids, n: int) -> Candidates:
        """The top n items of each known user among `user_ids` (unknown ones are left out)."""
        known = [u for u in user_ids if self.knows(u)]
        D, I = self.retrieve([self.user_row(u) for u in known], n)
        valid = I >= 0
        items = np.full(I.shape, "", dtype=object)
        items[valid] = self.index.items_of(I[valid])
        return Candidates(known, items, D, valid)

    def similar(self, requests: list[dict]) -> list[dict | None]:
        """Answers for requests {item_id, k}: the items nearest to the item's indexed vector
        (None for an item the index does not hold)."""
        out: list = [None] * len(requests)
        rows = self.index.rows_of([r["item_id"] for r in requests])
        found = [n for n, row in enumerate(rows) if row >= 0]
        if found:
            xq = np.stack([self.index.vector(int(rows[n])) for n in found])  # (B, d)
            D, I = self.index.search(xq, max(requests[n]["k"] for n in found) + 1)
            for b, n in enumerate(found):
                keep = (I[b] >= 0) & (I[b] != rows[n])
                sel, scores = I[b][keep][: requests[n]["k"]], D[b][keep][: requests[n]["k"]]
                out[n] = {"item_id": requests[n]["item_id"], "items": _items(self.index.items_of(sel), scores)}
        return out


def _items(item_ids, scores) -> list[dict]:
    return [{"item_id": i, "score": float(s)} for i, s in zip(item_ids, scores)]


def answer_rows(answers: list[dict]) -> list[tuple[str, int, str, float, bool]]:
    """Answers as (user_id, rank, item_id, score, fallback) rows: the CLI's and the pyfunc's form."""
    return [
        (a["user_id"], r + 1, i["item_id"], i["score"], a["fallback"])
        for a in answers
        for r, i in enumerate(a["items"])
    ]


# -- queries for index tuning and recall checks (before an index serves) -------------------------


def sample_users(con, n: int, salt: str = "") -> list[str]:
    """A fixed pseudo-random sample of n known users; another `salt` gives another sample."""
    return [
        r[0]
        for r in con.execute(
            "SELECT user_id FROM (SELECT DISTINCT user_id FROM interaction_splits) ORDER BY hash(user_id || $salt), user_id "
            "LIMIT $n",
            {"n": n, "salt": salt},
        ).fetchall()
    ]


def user_vectors_of(con, model, users: list[str]) -> np.ndarray:
    """(n, d) vectors of known users from their histories in the warehouse, by the serving rule,
    loading only their items' features (real queries for index tuning and recall checks)."""
    from models.retrieval.data import load_catalog

    histories = UserHistories.from_warehouse(con, users, popular=False)
    t = model.cfg
    catalog, _, _ = load_catalog(con, n_hashes=t.n_hashes, item_buckets=t.item_buckets, only=histories.item_ids())
    enc = HistoryEncoder(model, catalog, histories)
    return enc.user_vectors(np.arange(len(histories)))
