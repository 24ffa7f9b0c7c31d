"""FAISS indexes on clustered unit vectors: exact is exact, ANN recall is measured against it."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from models.index import IndexSpec, build_index, exact_search, recall_at_k, write_index_atomic


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 32))
    xb = centers[rng.integers(0, 20, 5000)] + 0.3 * rng.normal(size=(5000, 32))
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = xb[rng.choice(5000, 200, replace=False)] + 0.05 * rng.normal(size=(200, 32))
    ids = np.arange(5000, dtype=np.int64) * 7 + 3  # ids that are not positions
    return xb.astype(np.float32), ids, xq.astype(np.float32)


def test_flat_index_is_exact_and_returns_our_ids(vectors):
    xb, ids, xq = vectors
    index, params = build_index(xb, ids, IndexSpec(kind="auto", exact_max=10_000))
    assert params["type"] == "flat" and params["count"] == 5000
    D, I = index.search(xq, 10)
    D0, I0 = exact_search(xb, ids, xq, 10)
    assert recall_at_k(I, I0, 10) == 1.0 and set(I.ravel()) <= set(ids)


def test_ivf_recall_does_not_drop_as_nprobe_rises(vectors):
    xb, ids, xq = vectors
    _, I0 = exact_search(xb, ids, xq, 10)
    index, _ = build_index(xb, ids, IndexSpec(kind="ivf", nlist=64, nprobe=1))
    recalls = []
    for nprobe in (1, 4, 16, 64):
        faiss.extract_index_ivf(index).nprobe = nprobe
        recalls.append(recall_at_k(index.search(xq, 10)[1], I0, 10))
    assert recalls == sorted(recalls) and recalls[-1] == 1.0 and recalls[0] < 1.0


def test_hnsw_recall_is_high_and_the_written_index_reads_back(vectors, tmp_path):
    xb, ids, xq = vectors
    _, I0 = exact_search(xb, ids, xq, 10)
    index, params = build_index(xb, ids, IndexSpec(kind="hnsw", ef_search=128))
    assert params["type"] == "hnsw" and recall_at_k(index.search(xq, 10)[1], I0, 10) >= 0.95
    write_index_atomic(index, tmp_path / "items.faiss")
    back = faiss.read_index(str(tmp_path / "items.faiss"))
    assert back.ntotal == 5000 and not list(tmp_path.glob(".*"))
    assert np.array_equal(back.search(xq, 10)[1], index.search(xq, 10)[1])
