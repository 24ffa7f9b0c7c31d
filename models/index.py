"""FAISS indexes over unit item vectors (inner product = cosine), in FAISS's own vocabulary:
xb (nb, d) database vectors, xq (nq, d) queries, D distances, I ids.

- exact: IndexIDMap2(IndexFlatIP) below `exact_max` items;
- ANN above it: HNSW (efSearch tunable) or IVF-Flat (nprobe tunable), both wrapped in an
  IndexIDMap2 so item ids are catalog positions; ANN recall is always measured against exact
  IndexFlatIP search on the same vectors.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np


@dataclass
class IndexSpec:
    kind: str = "auto"  # auto | flat | hnsw | ivf
    exact_max: int = 100_000  # auto: exact search up to this many items
    hnsw_m: int = 32  # HNSW graph degree
    ef_construction: int = 80
    ef_search: int = 64
    nlist: int = 0  # IVF cells; 0 = 4 * sqrt(nb)
    nprobe: int = 16

    def resolve(self, nb: int) -> str:
        if self.kind != "auto":
            return self.kind
        return "flat" if nb <= self.exact_max else "hnsw"


def build_index(xb: np.ndarray, ids: np.ndarray, spec: IndexSpec = IndexSpec()) -> tuple[faiss.Index, dict]:
    """An id-mapped index over xb (nb, d) float32; returns it and its parameters."""
    nb, d = xb.shape
    assert ids.shape == (nb,), (ids.shape, nb)
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    kind = spec.resolve(nb)
    t0 = time.perf_counter()
    if kind == "flat":
        base, params = faiss.IndexFlatIP(d), {}
    elif kind == "hnsw":
        base = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = spec.ef_construction
        base.hnsw.efSearch = spec.ef_search
        params = {"m": spec.hnsw_m, "ef_construction": spec.ef_construction, "ef_search": spec.ef_search}
    elif kind == "ivf":
        nlist = spec.nlist or max(1, int(4 * np.sqrt(nb)))
        base = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        base.train(xb)
        base.nprobe = spec.nprobe
        params = {"nlist": nlist, "nprobe": spec.nprobe}
    else:
        raise ValueError(f"index kind must be auto, flat, hnsw or ivf, got {spec.kind!r}")
    index = faiss.IndexIDMap2(base)
    index.add_with_ids(xb, ids)
    return index, {"type": kind, "d": d, "count": nb, **params, "build_seconds": time.perf_counter() - t0}


def exact_search(xb: np.ndarray, ids: np.ndarray, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth: brute-force inner product on the same vectors."""
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(xb.shape[1]))
    flat.add_with_ids(np.ascontiguousarray(xb, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    return flat.search(np.ascontiguousarray(xq, dtype=np.float32), k)


def recall_at_k(I: np.ndarray, I_exact: np.ndarray, k: int) -> float:
    """Share of the exact top-k ids that the index also returns in its top-k."""
    assert I.shape == I_exact.shape, (I.shape, I_exact.shape)
    hits = sum(len(np.intersect1d(a[:k][a[:k] >= 0], b[:k])) for a, b in zip(I, I_exact))
    return hits / (I_exact.shape[0] * k)


def write_index_atomic(index: faiss.Index, path: Path) -> None:
    """Temp file in the same folder, fsync, rename: a reader never sees half an index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        faiss.write_index(index, tmp)  # faiss wants a str path
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
