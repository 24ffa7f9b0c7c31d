"""Serving helpers (no Dagster): embed the catalog with a checkpoint, recommend with an index."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from models.data import Catalog
from models.evaluation import item_vectors, user_vectors


def embed_items(model, catalog: Catalog) -> np.ndarray:
    """(N, d) float32 unit vectors for every catalog item; items never seen in training are
    embedded through their hashed id bucket and content features."""
    return item_vectors(model, catalog).numpy().astype(np.float32)


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


def file_sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class ServingError(ValueError):
    """Artifacts that cannot be served together, or a request that cannot be answered."""


class Recommender:
    """The promoted checkpoint and the FAISS index, loaded together and checked to match.

    `con` is a (read-only) connection to the warehouse; `artifacts` the artifacts folder.
    """

    def __init__(self, con, artifacts):
        import json

        import faiss
        import pyarrow.parquet as pq

        from models.checkpoint import load_checkpoint, read_manifest
        from models.data import load_catalog, load_serving_users

        version = read_manifest(artifacts / "models").get("current")
        index_manifest_path = artifacts / "index" / "manifest.json"
        if not version or not index_manifest_path.exists():
            raise ServingError("no promoted model and index yet: run `make demo` (or materialize the graph)")
        index_manifest = json.loads(index_manifest_path.read_text())
        if index_manifest["model_version"] != version:
            raise ServingError(f"the index was built from model {index_manifest['model_version']} but the current "
                               f"model is {version}: materialize item_embeddings and item_index")
        fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
        self.model, _, _ = load_checkpoint(artifacts / "models" / version, expected_fingerprint=fingerprint)
        t = self.model.cfg
        self.catalog, _, _ = load_catalog(con, n_hashes=t.n_hashes, item_buckets=t.item_buckets)
        self.item_ids = np.asarray(pq.read_table(artifacts / "embeddings" / "item_embeddings.parquet",
                                                 columns=["item_id"])["item_id"].to_pylist(), dtype=object)
        if len(self.item_ids) != len(self.catalog) or not (self.item_ids == self.catalog.item_ids).all():
            raise ServingError("item_embeddings do not match the catalog: materialize item_embeddings and item_index")
        self.index = faiss.read_index(str(artifacts / "index" / "items.faiss"))
        self.version = version
        self.users = load_serving_users(con, self.catalog, history_len=t.history_len, n_hashes=t.n_hashes,
                                        user_buckets=t.user_buckets)
        self._user_row = {u: i for i, u in enumerate(self.users.user_keys)}
        counts = con.execute("SELECT item_id, count(*) FROM interaction_splits GROUP BY 1").fetchall()
        pop = np.zeros(len(self.catalog))
        pos = self.catalog.index_of([c[0] for c in counts])
        pop[pos[pos >= 0]] = [c[1] for c, p in zip(counts, pos) if p >= 0]
        self._popular = np.argsort(-pop, kind="stable")
        self._pop = pop

    def recommend(self, user_ids: list[str], k: int = 10) -> list[tuple[str, int, str, float, bool]]:
        """(user_id, rank, item_id, score, fallback) rows; an unknown user gets popular items (fallback)."""
        if k < 1:
            raise ServingError(f"-k must be at least 1, got {k}")
        out = []
        known = [u for u in user_ids if u in self._user_row]
        if known:
            rows = np.array([self._user_row[u] for u in known])
            xq = embed_users(self.model, self.catalog, self.users.user_hash[rows], self.users.history[rows])
            seen = self.users.seen_of(rows)
            D, I = search_excluding_seen(self.index, xq, seen, k)
            for u, d, i in zip(known, D, I):
                out += [(u, r + 1, self.item_ids[j], float(s), False) for r, (s, j) in enumerate(zip(d, i)) if j >= 0]
        for u in user_ids:
            if u not in self._user_row:
                out += [(u, r + 1, self.item_ids[j], float(self._pop[j]), True)
                        for r, j in enumerate(self._popular[:k])]
        order = {u: n for n, u in enumerate(user_ids)}
        return sorted(out, key=lambda row: (order[row[0]], row[1]))

    def similar(self, item_id: str, k: int = 10) -> list[tuple[str, int, str, float]]:
        pos = self.catalog.index_of([item_id])[0]
        if pos < 0:
            raise ServingError(f"unknown item {item_id!r}")
        xq = self.index.reconstruct(int(pos))[None, :]
        D, I = self.index.search(xq, k + 1)
        hits = [(j, s) for j, s in zip(I[0], D[0]) if j >= 0 and j != pos][:k]
        return [(item_id, r + 1, self.item_ids[j], float(s)) for r, (j, s) in enumerate(hits)]
