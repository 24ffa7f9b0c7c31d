"""FAISS indexes over unit item vectors (inner product = cosine), in FAISS's own vocabulary:
xb (nb, d) database vectors, xq (nq, d) queries, D distances, I ids.

- exact: IndexIDMap2(IndexFlatIP) up to `exact_max` items (auto), IVF-Flat above;
- ANN above it: HNSW (efSearch tunable) in an IndexIDMap2, or IVF-Flat (nprobe tunable),
  which keeps ids itself. Ids are the stable `row_id`s of item_embeddings. ANN recall is
  always measured against exact IndexFlatIP search on the same vectors.

`ItemIndex` is what serving loads: a main segment built in full, a small exact delta segment
for rows added since, tombstones for main rows no longer live (HNSW cannot remove at all, and
removing from Flat or IVF would mean rewriting the whole main file on every update), and the
row_id -> item_id maps. Each save writes new folders and publishes them by rewriting
manifest.json last, so a reader sees a whole index or the previous one, never a mix.

Every ANN build tunes its search setting (`tune_search`): FAISS's `ParameterSpace` lists the
settings from cheapest to most accurate (nprobe 1, 2, 4, ... for IVF; efSearch for HNSW), and
the first whose recall@10 against exact search on real user vectors reaches the target is
kept, recorded in the manifest under "search" and applied whenever the index is loaded.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from models.artifacts import atomic_folder, file_sha256, read_manifest, write_manifest
from models.settings import setting as _setting  # `setting` names a search setting below


@dataclass
class IndexSpec:
    kind: str = _setting(
        "auto",
        "auto (exact Flat up to exact_max items, IVF above: HNSW "
        "recalled poorly on trained user vectors), flat, hnsw or ivf.",
    )
    exact_max: int = _setting(100_000, "auto: exact search up to this many items.")
    hnsw_m: int = _setting(32, "HNSW graph degree.")
    ef_construction: int = 80
    ef_search: int = _setting(128, "HNSW search breadth: recall vs speed.")
    nlist: int = 0  # IVF cells; 0 = 4 * sqrt(nb)
    nprobe: int = _setting(
        32,
        "IVF cells visited per query when the build is not tuned "
        "(tune=false, or no user to tune on); tuning replaces it.",
    )
    ivf_min_train: int = 100_000  # IVF k-means sample: max(this, 40 * nlist) rows

    def resolve(self, nb: int) -> str:
        if self.kind != "auto":
            return self.kind
        # IVF, not HNSW: on trained two-tower vectors queried by user vectors, HNSW (M=32) reached
        # recall@10 0.64 at efSearch 64 and 0.82 at 512 over 1M items; IVF nprobe 16 reached 0.997
        # (benchmarks/bench_incremental.py, bench_index.py --trained)
        return "flat" if nb <= self.exact_max else "ivf"


DEFAULT_SPEC = IndexSpec()  # the product defaults; callers pass their own spec rather than mutate this one


def build_index(xb: np.ndarray, ids: np.ndarray, spec: IndexSpec = DEFAULT_SPEC) -> tuple[faiss.Index, dict]:
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


def _tunable(main: faiss.Index) -> faiss.Index:
    """The index FAISS's ParameterSpace must see: it does not look inside an IndexIDMap2."""
    return faiss.downcast_index(main.index) if isinstance(main, (faiss.IndexIDMap, faiss.IndexIDMap2)) else main


def search_settings(main: faiss.Index) -> list[str]:
    """The search settings FAISS's ParameterSpace enumerates for an index, cheapest (and least
    accurate) first, e.g. ["nprobe=1", "nprobe=2", ...]; [] for an exact index."""
    ps = faiss.ParameterSpace()
    ps.initialize(_tunable(main))
    return [n for n in (ps.combination_name(i) for i in range(ps.n_combinations())) if n]


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found mask, values) of keys in a sorted key array."""
    if not len(sorted_keys):
        return np.zeros(len(keys), bool), np.full(len(keys), None, dtype=object)
    pos = np.searchsorted(sorted_keys, keys).clip(0, len(sorted_keys) - 1)
    hit = sorted_keys[pos] == keys
    return hit, np.where(hit, values[pos], None)


@dataclass
class ItemIndex:
    """Main segment + delta segment over item vectors keyed by row id, with row_id -> item_id.

    The main segment (Flat, HNSW or IVF) is built in full and never modified afterwards, so an
    update never rewrites it: new rows go to a small exact delta segment
    (IndexIDMap2(IndexFlatIP), which supports remove_ids), and main rows that are no longer
    live become tombstones that searches filter out with an IDSelector. A search merges the
    top-k of both segments. Once delta + tombstones pass a share of the index, the caller
    rebuilds (`changed_share`).
    """

    main: faiss.Index
    main_rows: np.ndarray  # (n,) sorted int64 row ids in main, tombstoned ones included
    main_items: np.ndarray  # (n,) object
    kind: str = "flat"
    delta: faiss.Index | None = None
    delta_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # sorted
    delta_items: np.ndarray = field(default_factory=lambda: np.zeros(0, object))
    stale: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # sorted main rows
    manifest: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.delta is None:
            self.delta = faiss.IndexIDMap2(faiss.IndexFlatIP(self.main.d))
        self._refresh()

    def _refresh(self) -> None:
        self._row_of_item = None  # built on first rows_of()
        # keep the selector objects referenced: FAISS holds raw pointers to them
        self._batch = faiss.IDSelectorBatch(self.stale) if len(self.stale) else None
        self._params = None
        if self._batch:
            self._not = faiss.IDSelectorNot(self._batch)
            # IVF insists on its own parameter type, whose nprobe (default 1) overrides the index's
            self._params = (
                faiss.SearchParametersIVF(sel=self._not, nprobe=faiss.extract_index_ivf(self.main).nprobe)
                if self.kind == "ivf"
                else faiss.SearchParameters(sel=self._not)
            )

    def __len__(self) -> int:
        return len(self.main_rows) - len(self.stale) + len(self.delta_rows)

    def set_search(self, setting: str) -> None:
        """Apply a ParameterSpace setting such as "nprobe=8" or "efSearch=64" to the main segment."""
        if setting:
            faiss.ParameterSpace().set_index_parameters(_tunable(self.main), setting)
            name, value = setting.split("=")
            key = {"nprobe": "nprobe", "efSearch": "ef_search"}.get(name, name)
            self.manifest.setdefault("params", {})[key] = int(float(value))
        self._refresh()

    def tune_search(self, xq: np.ndarray, I_exact: np.ndarray, target: float, k: int = 10) -> dict:
        """Walk FAISS's settings from the cheapest up and keep the first whose recall@k against the
        exact top-k `I_exact` of the queries `xq` reaches `target` (the most accurate one if none
        does: the recall check then reports it). Records and returns the operating points."""
        settings = search_settings(self.main)
        if not settings:
            return {}
        assert I_exact.shape == (len(xq), k), (I_exact.shape, len(xq), k)
        points = []
        for setting in settings:
            self.set_search(setting)
            t0 = time.perf_counter()
            _, I = self.search(xq, k)
            seconds = time.perf_counter() - t0
            points.append(
                {
                    "setting": setting,
                    "recall_at_10": round(recall_at_k(I, I_exact, k), 5),
                    "ms_per_query": round(1000 * seconds / len(xq), 4),
                }
            )
            if points[-1]["recall_at_10"] >= target:
                break
        chosen = points[-1]
        self.manifest["search"] = {
            "setting": chosen["setting"],
            "recall_at_10": chosen["recall_at_10"],
            "target": target,
            "queries": len(xq),
            "points": points,
            "met": chosen["recall_at_10"] >= target,
        }
        return self.manifest["search"]

    @property
    def ntotal(self) -> int:
        return int(self.main.ntotal + self.delta.ntotal)

    @classmethod
    def build(
        cls, xb: np.ndarray, row_ids: np.ndarray, item_ids: np.ndarray, spec: IndexSpec = DEFAULT_SPEC, **manifest
    ) -> "ItemIndex":
        rows = np.asarray(row_ids, np.int64)
        order = np.argsort(rows, kind="stable")
        index, params = build_index(xb, rows, spec)
        manifest.update(
            {
                "index_type": params["type"],
                "dim": int(xb.shape[1]),
                "params": {k: v for k, v in params.items() if k not in ("type", "d", "count", "build_seconds")},
                "build_seconds": round(params["build_seconds"], 3),
                "updates": 0,
            }
        )
        return cls(index, rows[order], np.asarray(item_ids, object)[order], params["type"], manifest=manifest)

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(nq, k) scores and row ids over both segments; tombstoned rows never come back; -1 pads."""
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        D, I = self.main.search(xq, k, params=self._params) if self._params else self.main.search(xq, k)
        if self.delta.ntotal:
            D2, I2 = self.delta.search(xq, min(k, self.delta.ntotal))
            D, I = np.concatenate([D, D2], axis=1), np.concatenate([I, I2], axis=1)
            D = np.where(I >= 0, D, -np.inf)
            top = np.argsort(-D, axis=1, kind="stable")[:, :k]
            D, I = np.take_along_axis(D, top, axis=1), np.take_along_axis(I, top, axis=1)
        return D, I

    def items_of(self, rows: np.ndarray) -> np.ndarray:
        """Item ids of row ids (None for -1, unknown or tombstoned rows)."""
        rows = np.asarray(rows, np.int64)
        hit, items = _lookup(self.delta_rows, self.delta_items, rows)
        main_hit, main_items = _lookup(self.main_rows, self.main_items, rows)
        if len(self.stale):
            main_hit &= ~np.isin(rows, self.stale)
        return np.where(hit, items, np.where(main_hit, main_items, None))

    def rows_of(self, item_ids) -> np.ndarray:
        """Live row ids of item ids (-1 where the index has no such item)."""
        if self._row_of_item is None:
            live = ~np.isin(self.main_rows, self.stale) if len(self.stale) else slice(None)
            self._row_of_item = dict(zip(self.main_items[live].tolist(), self.main_rows[live].tolist()))
            self._row_of_item.update(zip(self.delta_items.tolist(), self.delta_rows.tolist()))
        get = self._row_of_item.get
        return np.fromiter((get(i, -1) for i in item_ids), np.int64, count=len(item_ids))

    def vector(self, row: int) -> np.ndarray:
        """The stored vector of a row id."""
        in_delta = _lookup(self.delta_rows, self.delta_rows, np.array([row], np.int64))[0][0]
        return (self.delta if in_delta else self.main).reconstruct(int(row))

    def upsert(self, xb: np.ndarray, row_ids: np.ndarray, item_ids: np.ndarray, removed: np.ndarray) -> dict:
        """Add rows (new items, and changed items under new row ids) and drop `removed` row ids:
        delta rows are removed for real, main rows become tombstones."""
        t0 = time.perf_counter()
        removed = np.unique(np.asarray(removed, np.int64))
        in_delta = removed[np.isin(removed, self.delta_rows)]
        in_main = removed[np.isin(removed, self.main_rows) & ~np.isin(removed, self.stale)]
        if len(in_delta):
            self.delta.remove_ids(in_delta)
            keep = ~np.isin(self.delta_rows, in_delta)
            self.delta_rows, self.delta_items = self.delta_rows[keep], self.delta_items[keep]
        if len(in_main):
            self.stale = np.union1d(self.stale, in_main)
        rows = np.asarray(row_ids, np.int64)
        if len(rows):
            self.delta.add_with_ids(np.ascontiguousarray(xb, np.float32), rows)
            rows_all = np.concatenate([self.delta_rows, rows])
            order = np.argsort(rows_all, kind="stable")
            self.delta_rows = rows_all[order]
            self.delta_items = np.concatenate([self.delta_items, np.asarray(item_ids, object)])[order]
        self._refresh()
        self.manifest["updates"] = self.manifest.get("updates", 0) + 1
        return {
            "added": len(rows),
            "removed": len(in_delta) + len(in_main),
            "stale": len(self.stale),
            "delta": len(self.delta_rows),
            "seconds": time.perf_counter() - t0,
        }

    def changed_share(self) -> float:
        """(delta rows + tombstones) / live rows: how far the index is from a fresh build."""
        return (len(self.delta_rows) + len(self.stale)) / max(1, len(self))

    def save(self, root: Path, keep: int = 2) -> None:
        """Write what changed into new folders (the main segment only when it is new), then
        publish by replacing root/manifest.json; folders older than the last `keep` go."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        def write_folder(parent: Path, files: dict) -> str:
            # sortable by time (microseconds), unique across writers
            name = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]
            with atomic_folder(parent, name) as tmp:
                for fname, write in files.items():
                    write(tmp / fname)
            return name

        def ids_writer(rows, items):
            return lambda p: pq.write_table(
                pa.table({"row_id": pa.array(rows, pa.int64()), "item_id": pa.array(items.tolist(), pa.string())}), p
            )

        if not self.manifest.get("build"):
            self.manifest["build"] = write_folder(
                root / "builds",
                {
                    "main.faiss": lambda p: faiss.write_index(self.main, str(p)),
                    "ids.parquet": ids_writer(self.main_rows, self.main_items),
                },
            )
        self.manifest["delta"] = write_folder(
            root / "deltas",
            {
                "delta.faiss": lambda p: faiss.write_index(self.delta, str(p)),
                "ids.parquet": ids_writer(self.delta_rows, self.delta_items),
                "stale.npy": lambda p: np.save(p, self.stale),
            },
        )
        for seg, sub in (("main", "builds"), ("delta", "deltas")):
            folder = root / sub / self.manifest["build" if seg == "main" else "delta"]
            if seg == "delta" or "main_sha256" not in self.manifest:
                self.manifest[f"{seg}_sha256"] = file_sha256(folder / f"{seg}.faiss")
        self.manifest.update(
            {
                "count": len(self),
                "main_count": len(self.main_rows),
                "delta_count": len(self.delta_rows),
                "stale": len(self.stale),
                "changed_share": round(self.changed_share(), 6),
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        write_manifest(root, self.manifest)
        for sub, current in (("builds", self.manifest["build"]), ("deltas", self.manifest["delta"])):
            old = sorted(p for p in (root / sub).iterdir() if p.name != current)
            for p in old[: max(0, len(old) - keep)]:
                shutil.rmtree(p, ignore_errors=True)

    @classmethod
    def load(
        cls, root: Path, *, manifest: dict | None = None, reuse: "ItemIndex | None" = None, verify: bool = False
    ) -> "ItemIndex":
        """The index `manifest` (default: root/manifest.json) names. `reuse`: an index loaded
        before whose main segment is taken as it is when the build is the same (a delta-only
        update then reads only the delta). `verify`: check every file read against the sha256
        the manifest records (ValueError naming the file): a live reader refuses a damaged index."""
        import pyarrow.parquet as pq

        manifest = manifest or read_manifest(root)
        if manifest is None:
            raise FileNotFoundError(f"no item index in {root}: materialize item_index first")
        main_dir, delta_dir = root / "builds" / manifest["build"], root / "deltas" / manifest["delta"]
        if verify:
            for seg, folder in (("main", main_dir), ("delta", delta_dir)):
                if seg == "main" and reuse is not None and reuse.manifest.get("build") == manifest["build"]:
                    continue
                got = file_sha256(folder / f"{seg}.faiss")
                if got != manifest.get(f"{seg}_sha256"):
                    raise ValueError(
                        f"{folder / f'{seg}.faiss'}: sha256 {got[:12]} does not match the manifest's "
                        f"{str(manifest.get(f'{seg}_sha256'))[:12]} (damaged or half-written)"
                    )
        if reuse is not None and reuse.manifest.get("build") == manifest["build"]:
            main, main_rows, main_items = reuse.main, reuse.main_rows, reuse.main_items
        else:
            ids = pq.read_table(main_dir / "ids.parquet")
            main = faiss.read_index(str(main_dir / "main.faiss"))
            main_rows, main_items = ids["row_id"].to_numpy(), np.asarray(ids["item_id"].to_pylist(), dtype=object)
        dids = pq.read_table(delta_dir / "ids.parquet")
        index = cls(
            main,
            main_rows,
            main_items,
            manifest["index_type"],
            faiss.read_index(str(delta_dir / "delta.faiss")),
            dids["row_id"].to_numpy(),
            np.asarray(dids["item_id"].to_pylist(), dtype=object),
            np.load(delta_dir / "stale.npy"),
            manifest,
        )
        index.set_search(manifest.get("search", {}).get("setting", ""))  # the tuned setting serves
        return index
