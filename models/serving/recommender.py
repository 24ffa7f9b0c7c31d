"""Serving helpers (no Dagster): embed the catalog with a checkpoint, recommend with an index."""

from __future__ import annotations

import numpy as np
import torch

from models.retrieval.data import Catalog
from models.retrieval.evaluation import item_vectors, user_vectors


def embed_items(model, catalog: Catalog, log=None) -> np.ndarray:
    """(N, d) float32 unit vectors for every catalog item; an item whose id was never trained
    (the catalog's rule) is embedded by its content features alone, its id part zero."""
    return item_vectors(model, catalog, log=log).numpy().astype(np.float32)


def embed_users(model, catalog: Catalog, user_hash: torch.Tensor, history: torch.Tensor) -> np.ndarray:
    return user_vectors(model, catalog, user_hash, history).numpy().astype(np.float32)


def search_excluding_seen(index, xq: np.ndarray, seen: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ids per query with each query's seen ids removed: (nq, k) scores and ids, -1 padded."""
    nq = len(xq)
    extra = max((len(s) for s in seen), default=0)
    D, I = index.search(np.ascontiguousarray(xq, dtype=np.float32), k + extra)
    out_d = np.full((nq, k), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    for q in range(nq):
        keep = (I[q] >= 0) & ~np.isin(I[q], seen[q])
        ids, ds = I[q][keep][:k], D[q][keep][:k]
        out_i[q, : len(ids)], out_d[q, : len(ds)] = ids, ds
    return out_d, out_i


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
    """(n, d) vectors of known users from their latest histories in the warehouse, loading
    only their items' features (real queries for index tuning and recall checks)."""
    from models.retrieval.data import items_of_users, load_catalog, load_serving_users

    t = model.cfg
    catalog, _, _ = load_catalog(con, n_hashes=t.n_hashes, item_buckets=t.item_buckets, only=items_of_users(con, users))
    ev = load_serving_users(
        con, catalog, history_len=t.history_len, n_hashes=t.n_hashes, user_buckets=t.user_buckets, only=users
    )
    return embed_users(model, catalog, ev.user_hash, ev.history)


class ServingError(ValueError):
    """Artifacts that cannot be served together, or a request that cannot be answered."""


class Recommender:
    """The promoted checkpoint and the item index, loaded together and checked to match.

    `con` is a (read-only) connection to the warehouse; `artifacts` the artifacts folder.
    Catalog positions (what histories hold) map to index row ids through the item id.
    `threads` sets torch's and FAISS's thread counts for this process: 1 for one request at a
    time (a single user's work is too small to split: at 1M items 2 threads took p99 from
    1.2 ms to 44 ms, waking threads), None to leave them for batch work. `users` limits what
    is loaded to those users (and their items' features): quick to start for a few requests;
    other users then get the popularity fallback.
    """

    def __init__(self, con, artifacts, threads: int | None = None, users=None):
        from models.retrieval.checkpoint import champion_version, load_checkpoint
        from models.retrieval.data import items_of_users, load_catalog, load_serving_users
        from models.index.item_index import ItemIndex

        if threads is not None:
            import faiss

            torch.set_num_threads(threads)
            faiss.omp_set_num_threads(threads)
        version = champion_version(artifacts)
        if not version or not (artifacts / "index" / "manifest.json").exists():
            raise ServingError("no promoted model and index yet: run `make demo` (or materialize the graph)")
        self.index = ItemIndex.load(artifacts / "index")
        built_from = self.index.manifest.get("model_version")
        if built_from != version:
            raise ServingError(
                f"the index was built from model {built_from} but the current model is {version}: "
                "materialize item_embeddings and item_index"
            )
        fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
        if self.index.manifest.get("vocabulary_fingerprint") != fingerprint:
            raise ServingError(
                "the index was built under another vocabulary than the warehouse's: "
                "materialize the graph (training included) again"
            )
        self.model, _, _ = load_checkpoint(artifacts / "models" / version, expected_fingerprint=fingerprint)
        t = self.model.cfg
        # serving a few users needs the features of their items only, not the whole catalog
        only_items = None if users is None else items_of_users(con, users)
        self.catalog, _, _ = load_catalog(con, n_hashes=t.n_hashes, item_buckets=t.item_buckets, only=only_items)
        self.version = version
        self.users = load_serving_users(
            con, self.catalog, history_len=t.history_len, n_hashes=t.n_hashes, user_buckets=t.user_buckets, only=users
        )
        self._user_row = {u: i for i, u in enumerate(self.users.user_keys)}
        self.row_of_pos = self.index.rows_of(self.catalog.item_ids)  # -1: not in the index
        counts = con.execute(
            "SELECT item_id, count(*) AS n FROM interaction_splits GROUP BY 1 ORDER BY n DESC, item_id"
        ).df()
        rows = self.index.rows_of(counts["item_id"].tolist())
        self._popular = (rows[rows >= 0], counts["n"].to_numpy()[rows >= 0].astype(float))

    def user_vectors(self, rows: np.ndarray) -> np.ndarray:
        return embed_users(self.model, self.catalog, self.users.user_hash[rows], self.users.history[rows])

    def seen_rows(self, rows) -> list[np.ndarray]:
        """Index row ids of what each user already interacted with."""
        return [self.row_of_pos[s] for s in self.users.seen_of(rows)]

    def recommend(self, user_ids: list[str], k: int = 10) -> list[tuple[str, int, str, float, bool]]:
        """(user_id, rank, item_id, score, fallback) rows; an unknown user gets popular items (fallback)."""
        if k < 1:
            raise ServingError(f"-k must be at least 1, got {k}")
        out = []
        known = [u for u in user_ids if u in self._user_row]
        if known:
            rows = np.array([self._user_row[u] for u in known])
            D, I = search_excluding_seen(self.index, self.user_vectors(rows), self.seen_rows(rows), k)
            for u, d, i in zip(known, D, I):
                items = self.index.items_of(i)
                out += [(u, r + 1, items[r], float(d[r]), False) for r in range(k) if i[r] >= 0]
        pop_rows, pop_counts = self._popular
        pop_items = self.index.items_of(pop_rows[:k])
        for u in user_ids:
            if u not in self._user_row:
                out += [(u, r + 1, item, float(c), True) for r, (item, c) in enumerate(zip(pop_items, pop_counts))]
        order = {u: n for n, u in enumerate(user_ids)}
        return sorted(out, key=lambda row: (order[row[0]], row[1]))

    def similar(self, item_id: str, k: int = 10) -> list[tuple[str, int, str, float]]:
        row = self.index.rows_of([item_id])[0]
        if row < 0:
            raise ServingError(f"unknown item {item_id!r}")
        D, I = self.index.search(self.index.vector(row)[None, :], k + 1)
        hits = [(j, s) for j, s in zip(I[0], D[0]) if j >= 0 and j != row][:k]
        items = self.index.items_of(np.array([j for j, _ in hits], np.int64))
        return [(item_id, r + 1, items[r], float(s)) for r, (_, s) in enumerate(hits)]
