"""FAISS indexes over unit item vectors (inner product = cosine), in FAISS's own vocabulary:
xb (nb, d) database vectors, xq (nq, d) queries, D distances, I ids.

- exact: IndexIDMap2(IndexFlatIP) below `exact_max` items;
- ANN above it: HNSW (efSearch tunable) in an IndexIDMap2, or IVF-Flat (nprobe tunable),
  which keeps ids itself. Ids are the stable `row_id`s of item_embeddings. ANN recall is
  always measured against exact IndexFlatIP search on the same vectors.

`ItemIndex` is what serving loads: the FAISS index, the row_id -> item_id map and, for HNSW
(which cannot remove vectors), the tombstoned row ids that searches filter out. Upserts
remove + add in place for Flat and IVF; for HNSW they add and tombstone, and the caller
rebuilds once the share of changes since the last build passes a threshold. Each save is a
new build folder, published by rewriting manifest.json last, so a reader sees a whole index
or the previous one, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
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
    ivf_min_train: int = 100_000  # IVF k-means sample: max(this, 40 * nlist) rows

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
        # k-means on a sample: 40 points per cell is what faiss asks for, more only costs time
        n_train = min(nb, max(spec.ivf_min_train, 40 * nlist))
        sample = np.random.default_rng(0).choice(nb, n_train, replace=False) if n_train < nb else slice(None)
        base.train(xb[sample])
        base.nprobe = spec.nprobe
        params = {"nlist": nlist, "nprobe": spec.nprobe, "trained_on": n_train}
    else:
        raise ValueError(f"index kind must be auto, flat, hnsw or ivf, got {spec.kind!r}")
    if kind == "ivf":
        # IVF keeps external ids itself; an IDMap around it maps ids wrongly after remove_ids
        # (IDMap compacts its table as if the inner index renumbered, which IVF does not)
        base.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct(id) and remove_ids
        index = base
    else:
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


@dataclass
class ItemIndex:
    """A FAISS index over item vectors keyed by row id, with the row_id -> item_id map."""

    index: faiss.Index
    row_ids: np.ndarray  # (n,) int64 live row ids
    item_ids: np.ndarray  # (n,) object, aligned with row_ids
    stale: np.ndarray  # int64 row ids still inside an HNSW graph but no longer live
    manifest: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._reindex()

    def _reindex(self) -> None:
        order = np.argsort(self.row_ids, kind="stable")
        self.row_ids, self.item_ids = self.row_ids[order], self.item_ids[order]
        self._row_of_item = dict(zip(self.item_ids.tolist(), self.row_ids.tolist()))
        # keep the selector objects referenced: FAISS holds raw pointers to them
        self._batch = faiss.IDSelectorBatch(self.stale) if len(self.stale) else None
        self._params = faiss.SearchParameters(sel=faiss.IDSelectorNot(self._batch)) if self._batch else None

    @property
    def kind(self) -> str:
        return self.manifest.get("index_type", "flat")

    def __len__(self) -> int:
        return len(self.row_ids)

    @classmethod
    def build(cls, xb: np.ndarray, row_ids: np.ndarray, item_ids: np.ndarray, spec: IndexSpec = IndexSpec(),
              **manifest) -> "ItemIndex":
        index, params = build_index(xb, row_ids, spec)
        manifest.update({"index_type": params["type"], "dim": int(xb.shape[1]),
                         "params": {k: v for k, v in params.items() if k not in ("type", "d", "count", "build_seconds")},
                         "build_seconds": round(params["build_seconds"], 3), "changed_since_build": 0, "updates": 0})
        return cls(index, np.asarray(row_ids, np.int64), np.asarray(item_ids, object), np.zeros(0, np.int64), manifest)

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(nq, k) scores and row ids; tombstoned rows never come back; -1 pads."""
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        return self.index.search(xq, k, params=self._params) if self._params else self.index.search(xq, k)

    def items_of(self, rows: np.ndarray) -> np.ndarray:
        """Item ids of row ids (None for -1 or unknown rows)."""
        rows = np.asarray(rows, np.int64)
        pos = np.searchsorted(self.row_ids, rows).clip(0, max(len(self.row_ids) - 1, 0))
        hit = (rows >= 0) & (len(self.row_ids) > 0) & (self.row_ids[pos] == rows)
        return np.where(hit, self.item_ids[pos], None)

    def rows_of(self, item_ids) -> np.ndarray:
        """Row ids of item ids (-1 where the index has no such item)."""
        get = self._row_of_item.get
        return np.fromiter((get(i, -1) for i in item_ids), np.int64, count=len(item_ids))

    def vector(self, row: int) -> np.ndarray:
        """The stored vector of a row id."""
        return self.index.reconstruct(int(row))

    def upsert(self, xb: np.ndarray, row_ids: np.ndarray, item_ids: np.ndarray, removed: np.ndarray) -> dict:
        """Add rows (new or changed items under new row ids) and drop `removed` row ids.

        Flat and IVF remove in place; HNSW cannot, so removed rows become tombstones that
        searches filter out until the next rebuild.
        """
        t0 = time.perf_counter()
        removed = np.intersect1d(np.asarray(removed, np.int64), self.row_ids)
        if len(removed):
            if self.kind == "hnsw":
                self.stale = np.union1d(self.stale, removed)
            else:
                n = self.index.remove_ids(removed)
                assert n == len(removed), (n, len(removed))
        if len(row_ids):
            self.index.add_with_ids(np.ascontiguousarray(xb, np.float32), np.ascontiguousarray(row_ids, np.int64))
        keep = ~np.isin(self.row_ids, removed)
        self.row_ids = np.concatenate([self.row_ids[keep], np.asarray(row_ids, np.int64)])
        self.item_ids = np.concatenate([self.item_ids[keep], np.asarray(item_ids, object)])
        self._reindex()
        self.manifest["changed_since_build"] = self.manifest.get("changed_since_build", 0) + len(row_ids) + len(removed)
        self.manifest["updates"] = self.manifest.get("updates", 0) + 1
        return {"added": len(row_ids), "removed": len(removed), "stale": len(self.stale),
                "seconds": time.perf_counter() - t0}

    def changed_share(self) -> float:
        return self.manifest.get("changed_since_build", 0) / max(1, len(self))

    def save(self, root: Path, keep: int = 2) -> Path:
        """Write a new build folder under root/builds, then publish it by replacing root/manifest.json."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from models.checkpoint import write_json_atomic

        builds = root / "builds"
        builds.mkdir(parents=True, exist_ok=True)
        # sortable by time (microseconds), unique across writers
        name = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]
        tmp = builds / f".{name}.tmp"
        tmp.mkdir()
        try:
            faiss.write_index(self.index, str(tmp / "items.faiss"))
            pq.write_table(pa.table({"row_id": pa.array(self.row_ids, pa.int64()),
                                     "item_id": pa.array(self.item_ids.tolist(), pa.string())}), tmp / "ids.parquet")
            np.save(tmp / "stale.npy", self.stale)
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, builds / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.manifest.update({"build": name, "count": len(self), "ntotal": int(self.index.ntotal),
                              "stale": len(self.stale), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        write_json_atomic(root / "manifest.json", self.manifest)
        for old in sorted(p for p in builds.iterdir() if p.name != name)[:-keep or None]:
            shutil.rmtree(old, ignore_errors=True)
        return builds / name

    @classmethod
    def load(cls, root: Path) -> "ItemIndex":
        import pyarrow.parquet as pq

        manifest = json.loads((root / "manifest.json").read_text())
        folder = root / "builds" / manifest["build"]
        ids = pq.read_table(folder / "ids.parquet")
        index = faiss.read_index(str(folder / "items.faiss"))
        return cls(index, ids["row_id"].to_numpy(), np.asarray(ids["item_id"].to_pylist(), dtype=object),
                   np.load(folder / "stale.npy"), manifest)
