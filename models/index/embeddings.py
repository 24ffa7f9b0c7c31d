"""The item embedding table and the index over it, refreshed incrementally (no Dagster).

The table (row_id, item_id, vector, model_version, content_hash, and the item's encoded
features: id_hash, categories, tokens, numeric) is a set of Parquet parts under
`<folder>/items/`, listed by `<folder>/manifest.json`. The features are what the user tower
reads for a history item; carrying them here lets the online service (models/serving) build
user vectors without opening the warehouse, and new items reach it with their features in
the same part as their vectors. A row id names one embedding of
one version of an item's content: a new or changed item gets a new row id (a changed item's
old row is dropped), so the index, keyed by row id, takes new rows into its delta segment and
tombstones dropped ones. Row ids grow monotonically under one model version; a new model
version re-embeds everything from 0.

`refresh_embeddings` embeds only items whose (item_id, content_hash) the table lacks, unless
the model or vocabulary changed, and writes one new part (plus rewrites of the parts that
lost rows); `refresh_index` upserts the rows the index lacks and drops the rows the table
lost, rebuilding when the index kind changes or delta + tombstones pass `rebuild_share`.
Both cost O(new items) in I/O, not O(catalog).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from models.artifacts import atomic_file, file_sha256, read_manifest, write_manifest
from models.retrieval.data import CATALOG_SQL, load_catalog
from models.index.item_index import IndexSpec, ItemIndex, exact_search, search_settings
from models.index.settings import IndexRefresh
from models.retrieval.inference import embed_items

PART_ROWS = 262_144  # a changed item rewrites its part: bounded work


def embeddings_table(folder: Path, columns: list[str] | None = None, filter=None) -> pa.Table:
    """The table as the manifest lists it (the consistent view), optionally projected/filtered."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"no item embeddings in {folder}: materialize item_embeddings first")
    files = [str(folder / "items" / p["file"]) for p in manifest["parts"]]
    if not files:
        return _schema(manifest["dim"]).empty_table().select(columns or _schema(manifest["dim"]).names)
    return ds.dataset(files, format="parquet").to_table(columns=columns, filter=filter)


def read_embeddings(folder: Path, filter=None, items: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(row ids, item ids (None unless `items`), (n, d) float32 vectors), optionally only the
    rows matching a dataset filter."""
    table = embeddings_table(folder, ["row_id", "item_id", "vector"] if items else ["row_id", "vector"], filter)
    d = table.schema.field("vector").type.list_size
    xb = table["vector"].combine_chunks().flatten().to_numpy().reshape(-1, d).astype(np.float32, copy=False)
    ids = np.asarray(table["item_id"].to_pylist(), dtype=object) if items else None
    return table["row_id"].to_numpy(), ids, xb


# the Catalog tensors each row carries (models.retrieval.data.Catalog), as fixed-size lists
FEATURES = {"id_hash": pa.int64(), "categories": pa.int32(), "tokens": pa.int32(), "numeric": pa.float32()}


def _schema(d: int, widths: dict[str, int] | None = None) -> pa.Schema:
    fields = [
        ("row_id", pa.int64()),
        ("item_id", pa.string()),
        ("vector", pa.list_(pa.float32(), d)),
        ("model_version", pa.string()),
        ("content_hash", pa.string()),
    ]
    return pa.schema(fields + [(f, pa.list_(t, widths[f])) for f, t in FEATURES.items()] if widths else fields)


def _fixed(a: np.ndarray, dtype) -> pa.FixedSizeListArray:
    """(n, w) array -> a fixed-size list column of width w."""
    a = np.ascontiguousarray(a)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.ravel(), dtype), a.shape[1])


def _rows_table(row_ids, catalog, xb: np.ndarray, version: str) -> pa.Table:
    """One row per catalog item: its vector and the encoded features it was embedded from."""
    n, d = xb.shape
    assert len(catalog) == n, (len(catalog), n)
    feats = {f: getattr(catalog, f)[:n].numpy() for f in FEATURES}  # (n, width) each; drops the padding row
    return pa.Table.from_arrays(
        [
            pa.array(row_ids, pa.int64()),
            pa.array(list(catalog.item_ids), pa.string()),
            _fixed(xb, pa.float32()),
            pa.array([version] * n, pa.string()),
            pa.array(list(catalog.content_hash), pa.string()),
            *(_fixed(feats[f], t) for f, t in FEATURES.items()),
        ],
        schema=_schema(d, {f: feats[f].shape[1] for f in FEATURES}),
    )


def read_catalog(folder: Path, parts: list[dict] | None = None):
    """The table's items as a `Catalog` (features from the table, in table order) plus their row
    ids: what serving needs to encode histories, without the warehouse. `parts` (manifest
    entries) reads only those parts."""
    import torch

    from models.retrieval.data import Catalog

    manifest = read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"no item embeddings in {folder}: materialize item_embeddings first")
    if not manifest.get("features"):
        raise ValueError(
            f"{folder / 'manifest.json'}: item_embeddings carries no item features (written before "
            "serving needed them): materialize item_embeddings with config full: true"
        )
    files = [str(folder / "items" / p["file"]) for p in (manifest["parts"] if parts is None else parts)]
    table = ds.dataset(files, format="parquet").to_table(columns=["row_id", "item_id", *FEATURES])

    def tensor(col: str, dtype) -> torch.Tensor:
        c = table[col].combine_chunks()
        w = c.type.list_size
        a = c.flatten().to_numpy().reshape(-1, w)
        return torch.as_tensor(np.concatenate([a, np.zeros((1, w), a.dtype)]), dtype=dtype)  # + the padding row

    catalog = Catalog(
        np.asarray(table["item_id"].to_pylist(), dtype=object),
        tensor("id_hash", torch.long),
        tensor("categories", torch.long),
        tensor("tokens", torch.long),
        tensor("numeric", torch.float32),
    )
    return catalog, table["row_id"].to_numpy()


def _write_part(folder: Path, table: pa.Table) -> dict:
    items = folder / "items"
    items.mkdir(parents=True, exist_ok=True)
    name = f"part-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:6]}.parquet"
    with atomic_file(items / name) as tmp:
        # vectors do not compress; skipping it halves write and read time
        pq.write_table(
            table,
            tmp,
            row_group_size=65_536,
            compression={c: "none" if c == "vector" else "snappy" for c in table.column_names},
        )
    return {"file": name, "rows": table.num_rows, "sha256": file_sha256(items / name)}


def refresh_embeddings(
    con, folder: Path, model, version: str, fingerprint: str, *, full: bool = False, log=lambda m: None
) -> dict:
    """Bring item_embeddings up to date with the warehouse catalog; returns what it did.

    Full when asked, when there is no table yet, or when the model version or vocabulary
    fingerprint differs from the table's; otherwise only new and changed items are embedded
    and items gone from the catalog are dropped.
    """
    t0 = time.perf_counter()
    cfg = model.cfg
    prev = read_manifest(folder)
    reason = (
        "asked"
        if full
        else "no table yet"
        if prev is None
        else "new model version"
        if prev["model_version"] != version
        else "new vocabulary"
        if prev["vocabulary_fingerprint"] != fingerprint
        else "the table carries no item features"
        if not prev.get("features")
        else None
    )
    if reason:
        catalog, _, _ = load_catalog(con, n_hashes=cfg.n_hashes, item_buckets=cfg.item_buckets)
        log(f"item_embeddings: full embedding of {len(catalog):,} items ({reason})")
        xb = embed_items(model, catalog, log=log)
        table = _rows_table(np.arange(len(catalog)), catalog, xb, version)
        parts = [_write_part(folder, table.slice(s, PART_ROWS)) for s in range(0, table.num_rows, PART_ROWS)]
        stats = {
            "mode": "full",
            "reason": reason,
            "embedded": len(catalog),
            "added": len(catalog),
            "changed": 0,
            "removed": 0,
            "parts_written": len(parts),
        }
        next_row, d = len(catalog), xb.shape[1]
        table_id = uuid.uuid4().hex  # row ids restart: an index of the previous table must be rebuilt
    else:
        d, next_row, parts, table_id = prev["dim"], prev["next_row_id"], list(prev["parts"]), prev["table_id"]
        old = pa.concat_tables(  # noqa: F841 (read by DuckDB below)
            [
                pq.read_table(
                    folder / "items" / p["file"], columns=["row_id", "item_id", "content_hash"]
                ).append_column("part", pa.array(np.full(p["rows"], i, np.int32)))
                for i, p in enumerate(parts)
            ]
            or [
                pa.table(
                    {
                        "row_id": pa.array([], pa.int64()),
                        "item_id": pa.array([], pa.string()),
                        "content_hash": pa.array([], pa.string()),
                        "part": pa.array([], pa.int32()),
                    }
                )
            ]
        )
        delta = con.execute(
            f"""SELECT coalesce(c.item_id, o.item_id) AS item_id, o.row_id, o.part, c.item_id IS NOT NULL AS in_catalog
                FROM ({CATALOG_SQL}) c FULL JOIN old o USING (item_id)
                WHERE o.row_id IS NULL OR c.item_id IS NULL OR c.content_hash IS DISTINCT FROM o.content_hash"""
        ).df()
        embed = delta[delta.in_catalog]
        stats = {
            "mode": "incremental",
            "reason": "same model",
            "embedded": len(embed),
            "added": int(embed.row_id.isna().sum()),
            "changed": int(embed.row_id.notna().sum()),
            "removed": int((~delta.in_catalog).sum()),
            "parts_written": 0,
        }
        log(
            f"item_embeddings: {stats['added']:,} new, {stats['changed']:,} changed, {stats['removed']:,} removed items"
        )
        dropped = delta.dropna(subset=["row_id"])  # changed or gone: their old rows leave the table
        for i in sorted(set(dropped["part"].astype(int))):
            path = folder / "items" / parts[i]["file"]
            rows = pa.array(dropped.loc[dropped["part"] == i, "row_id"].astype(np.int64), pa.int64())
            table = pq.read_table(path)
            kept = table.filter(pc.invert(pc.is_in(table["row_id"], value_set=rows)))
            parts[i] = _write_part(folder, kept) if kept.num_rows else None
            stats["parts_written"] += kept.num_rows > 0
        parts = [p for p in parts if p]
        if len(embed):
            sub, _, _ = load_catalog(
                con, n_hashes=cfg.n_hashes, item_buckets=cfg.item_buckets, only=embed["item_id"].tolist()
            )
            xb_new = embed_items(model, sub)
            parts.append(
                _write_part(folder, _rows_table(np.arange(next_row, next_row + len(sub)), sub, xb_new, version))
            )
            stats["parts_written"] += 1
            next_row += len(sub)
    count = sum(p["rows"] for p in parts)
    if reason or stats["embedded"] or stats["removed"]:
        write_manifest(
            folder,
            {
                "model_version": version,
                "vocabulary_fingerprint": fingerprint,
                "count": count,
                "dim": d,
                "table_id": table_id,
                "next_row_id": int(next_row),
                "parts": parts,
                "features": list(FEATURES),
                "sha256": hashlib.sha256("".join(p["sha256"] for p in parts).encode()).hexdigest(),
                "last_update": stats,
            },
        )
        listed = {p["file"] for p in parts}
        for f in (folder / "items").iterdir():  # the folder holds exactly the listed parts again
            if f.name not in listed:
                f.unlink()
    stats.update(count=count, seconds=round(time.perf_counter() - t0, 3))
    return stats


def refresh_index(
    root: Path,
    folder: Path,
    spec: IndexSpec,
    *,
    rebuild_share: float = IndexRefresh.rebuild_share,
    full: bool = False,
    tune_queries=None,
    tune_target: float = IndexRefresh().tune_target,
    log=lambda m: None,
) -> tuple[ItemIndex, dict]:
    """Bring the index under `root` up to date with item_embeddings in `folder`; returns it and what it did.

    A full build of an ANN index tunes its search setting (`ItemIndex.tune_search`) on the query
    vectors `tune_queries()` returns (real user vectors; called only then) to reach `tune_target`
    recall@10; an upsert keeps the setting its build chose."""
    t0 = time.perf_counter()
    emb = read_manifest(folder)
    if emb is None:
        raise FileNotFoundError(f"no item embeddings in {folder}: materialize item_embeddings first")
    idx = ItemIndex.load(root) if (root / "manifest.json").exists() and not full else None
    reason = (
        "asked"
        if full
        else "no index yet"
        if idx is None
        else "new model version"
        if idx.manifest.get("model_version") != emb["model_version"]
        else "item_embeddings re-embedded in full"
        if idx.manifest.get("embeddings_table_id") != emb["table_id"]
        else f"index kind {idx.kind} -> {spec.resolve(emb['count'])}"
        if idx.kind != spec.resolve(emb["count"])
        else None
    )
    stats: dict = {}
    if not reason:
        live = embeddings_table(folder, ["row_id"])["row_id"].to_numpy()
        indexed = np.concatenate([np.setdiff1d(idx.main_rows, idx.stale, assume_unique=True), idx.delta_rows])
        removed = indexed[~np.isin(indexed, live)]
        top = int(max(idx.main_rows.max(initial=-1), idx.delta_rows.max(initial=-1)))
        add_rows, add_items, xb = read_embeddings(folder, filter=pc.field("row_id") > top)
        after = (len(idx.delta_rows) + len(add_rows) + len(idx.stale) + len(removed)) / max(1, len(live))
        if after > rebuild_share:
            reason = f"delta + tombstones would be {after:.1%} of the index (rebuild_share {rebuild_share:.0%})"
        else:
            stats = {"mode": "upsert", **idx.upsert(xb, add_rows, add_items, removed)}
            log(
                f"item_index: upserted {len(add_rows):,} rows, removed {len(removed):,} ({idx.kind} main, "
                f"{len(idx.delta_rows):,} delta rows, {len(idx.stale):,} tombstones)"
            )
    if reason:
        log(f"item_index: full build ({reason})")
        rows, items, xb = read_embeddings(folder)
        idx = ItemIndex.build(xb, rows, items, spec)
        stats = {"mode": "build", "reason": reason, "added": len(rows), "removed": 0, "stale": 0, "delta": 0}
        xq = tune_queries() if tune_queries is not None and search_settings(idx.main) else None
        if xq is not None and len(xq):
            k = min(10, len(rows))
            _, I_exact = exact_search(xb, rows, xq, k)
            tuned = idx.tune_search(xq, I_exact, tune_target, k)
            log(
                f"item_index: search tuned to {tuned['setting']} (recall@10 {tuned['recall_at_10']:.4f} on "
                f"{len(xq):,} user vectors, target {tune_target}): "
                + ", ".join(f"{p['setting']} {p['recall_at_10']:.3f}" for p in tuned["points"])
            )
            stats.update(search=tuned["setting"], tuned_recall_at_10=tuned["recall_at_10"])
    idx.manifest.update(
        {
            "model_version": emb["model_version"],
            "vocabulary_fingerprint": emb["vocabulary_fingerprint"],
            "embeddings_table_id": emb["table_id"],
            "embeddings_sha256": emb["sha256"],
        }
    )
    idx.save(root)
    stats.update(count=len(idx), seconds=round(time.perf_counter() - t0, 3))
    return idx, stats
