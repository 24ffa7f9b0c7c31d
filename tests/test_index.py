"""FAISS indexes on clustered unit vectors: exact is exact, ANN recall is measured against it."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from models.index.item_index import IndexSpec, build_index, exact_search, recall_at_k


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
    faiss.write_index(index, str(tmp_path / "items.faiss"))
    back = faiss.read_index(str(tmp_path / "items.faiss"))
    assert back.ntotal == 5000
    assert np.array_equal(back.search(xq, 10)[1], index.search(xq, 10)[1])


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_item_index_upsert_goes_to_the_delta_tombstones_main_and_survives_a_reload(vectors, tmp_path, kind):
    from models.index.item_index import ItemIndex

    xb, _, xq = vectors
    rows = np.arange(4000, dtype=np.int64)
    items = np.array([f"i{r}" for r in rows], dtype=object)
    idx = ItemIndex.build(xb[:4000], rows, items, IndexSpec(kind=kind, nlist=32, nprobe=32, ef_search=256))
    idx.save(tmp_path)
    main_file = next((tmp_path / "builds").iterdir()) / "main.faiss"
    main_bytes = main_file.read_bytes()
    # 1000 new rows; 50 old rows replaced (a changed item gets a new row) and 50 removed outright
    new_rows = np.arange(4000, 5000, dtype=np.int64)
    new_items = np.array([f"i{r}" for r in range(4000, 4950)] + [f"i{r}" for r in range(50)], dtype=object)
    removed = np.arange(100, dtype=np.int64)
    stats = idx.upsert(xb[4000:], new_rows, new_items, removed)
    assert (stats["added"], stats["removed"], stats["stale"], stats["delta"]) == (1000, 100, 100, 1000)
    assert len(idx) == 4900 and idx.ntotal == 5000
    # then a delta row is replaced: it leaves the delta for real
    idx.upsert(xb[4999:5000], np.array([5000]), np.array(["i4999b"], dtype=object), np.array([4999]))
    assert len(idx.delta_rows) == 1000 and 4999 not in idx.delta_rows and len(idx) == 4900
    live = np.concatenate([np.arange(100, 4999), [5000]])
    xlive = np.concatenate([xb[100:4999], xb[4999:5000]])
    _, I0 = exact_search(xlive, live, xq, 10)
    I = idx.search(xq, 10)[1]
    assert not np.isin(I, np.append(removed, 4999)).any() and recall_at_k(I, I0, 10) >= 0.95
    # every new row is its own nearest neighbour, and item ids follow the rows
    assert (idx.search(xb[4000:4999], 1)[1][:, 0] == new_rows[:999]).all()
    assert list(idx.items_of(np.array([4950, 4000, -1, 7, 5000]))) == ["i0", "i4000", None, None, "i4999b"]
    assert list(idx.rows_of(["i0", "i60", "i160", "nope"])) == [4950, -1, 160, -1]
    idx.save(tmp_path)
    assert main_file.read_bytes() == main_bytes  # an update never rewrites the main segment
    back = ItemIndex.load(tmp_path)
    assert np.array_equal(back.search(xq, 10)[1], I) and back.kind == kind and back.manifest["updates"] == 2
    assert np.allclose(back.vector(4000), xb[4000], atol=1e-6) and np.allclose(back.vector(200), xb[200], atol=1e-6)
    assert back.changed_share() == pytest.approx((1000 + 100) / 4900)


def test_item_index_publishes_folders_atomically_and_prunes_old_ones(vectors, tmp_path):
    import json

    from models.index.item_index import ItemIndex

    xb, _, _ = vectors
    idx = ItemIndex.build(xb[:100], np.arange(100), np.array([f"i{i}" for i in range(100)], dtype=object))
    deltas = []
    for r in range(4):
        idx.upsert(xb[100 + r : 101 + r], np.array([100 + r]), np.array([f"n{r}"], dtype=object), np.array([r]))
        idx.save(tmp_path)
        deltas.append(json.loads((tmp_path / "manifest.json").read_text())["delta"])
    assert len(list((tmp_path / "builds").iterdir())) == 1
    assert sorted(p.name for p in (tmp_path / "deltas").iterdir()) == sorted(deltas[-3:])
    assert not list(tmp_path.glob(".*")) and not list((tmp_path / "deltas").glob(".*"))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_a_build_tunes_the_cheapest_setting_that_reaches_the_target_and_serves_with_it(vectors, tmp_path, kind):
    from models.index.item_index import ItemIndex

    xb, ids, xq = vectors
    _, I0 = exact_search(xb, ids, xq, 10)
    index = ItemIndex.build(xb, ids, np.array([f"i{i}" for i in ids], object), IndexSpec(kind=kind, nlist=64))
    tuned = index.tune_search(xq, I0, target=0.97)
    recalls = [p["recall_at_10"] for p in tuned["points"]]
    # settings walk from the cheapest up and stop at the first that reaches the target
    assert tuned["met"] and recalls[-1] >= 0.97 and all(r < 0.97 for r in recalls[:-1])
    assert len(recalls) > 1 and recalls == sorted(recalls)  # recall does not drop as the setting rises
    assert tuned["setting"] == tuned["points"][-1]["setting"]
    # recorded in the manifest, applied on load: the loaded index answers as the tuned one did
    index.save(tmp_path)
    back = ItemIndex.load(tmp_path)
    assert back.manifest["search"]["setting"] == tuned["setting"]
    assert recall_at_k(back.search(xq, 10)[1], I0, 10) == pytest.approx(recalls[-1])
    value = int(tuned["setting"].split("=")[1])
    main = (
        faiss.extract_index_ivf(back.main).nprobe
        if kind == "ivf"
        else faiss.downcast_index(back.main.index).hnsw.efSearch
    )
    assert main == value
    # an exact index has nothing to tune
    flat = ItemIndex.build(xb, ids, np.array([f"i{i}" for i in ids], object), IndexSpec(kind="flat"))
    assert flat.tune_search(xq, I0, target=0.97) == {}
