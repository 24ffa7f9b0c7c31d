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
