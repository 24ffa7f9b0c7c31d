"""The item embedding table and the index over it, refreshed incrementally (no Dagster).

item_embeddings.parquet holds row_id, item_id, vector, model_version, content_hash. A row id
names one embedding of one version of an item's content: a new or changed item gets a new
row id (changed items lose their old row), so the FAISS index, keyed by row id, can be
upserted with `remove_ids` + `add_with_ids` and HNSW can tombstone. Row ids grow
monotonically under one model version; a new model version re-embeds everything from 0.

`refresh_embeddings` embeds only items whose (item_id, content_hash) the table lacks, unless
the model or vocabulary changed; `refresh_index` upserts the rows the index lacks and drops
the rows the table lost, rebuilding when the index kind changes or an ANN index has absorbed
more than `rebuild_share` of its size in changes since its last build.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.checkpoint import write_json_atomic
from models.data import CATALOG_SQL, load_catalog
from models.index import IndexSpec, ItemIndex
from models.serving import embed_items, file_sha256

TABLE = "item_embeddings.parquet"


def read_manifest(folder: Path) -> dict | None:
    path = folder / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else None


def read_embeddings(folder: Path, filters=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row ids, item ids, (n, d) float32 vectors), optionally only rows matching parquet `filters`."""
    table = pq.read_table(folder / TABLE, columns=["row_id", "item_id", "vector"], filters=filters)
    d = table.schema.field("vector").type.list_size
    xb = table["vector"].combine_chunks().flatten().to_numpy().reshape(-1, d).astype(np.float32)
    return table["row_id"].to_numpy(), np.asarray(table["item_id"].to_pylist(), dtype=object), xb


def _rows_table(row_ids, item_ids, xb: np.ndarray, version: str, hashes) -> pa.Table:
    n, d = xb.shape
    return pa.table({
        "row_id": pa.array(row_ids, pa.int64()),
        "item_id": pa.array(list(item_ids), pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(xb).ravel(), pa.float32()), d),
        "model_version": pa.array([version] * n, pa.string()),
        "content_hash": pa.array(list(hashes), pa.string()),
    })


def refresh_embeddings(con, folder: Path, model, version: str, fingerprint: str, *, full: bool = False,
                       log=lambda m: None) -> dict:
    """Bring item_embeddings up to date with the warehouse catalog; returns what it did.

    Full when asked, when there is no table yet, or when the model version or vocabulary
    fingerprint differs from the table's; otherwise only new and changed items are embedded
    and items gone from the catalog are dropped.
    """
    t0 = time.perf_counter()
    cfg = model.cfg
    prev = read_manifest(folder)
    reason = ("asked" if full else "no table yet" if prev is None
              else "new model version" if prev["model_version"] != version
              else "new vocabulary" if prev["vocabulary_fingerprint"] != fingerprint else None)
    if reason:
        catalog, _, _ = load_catalog(con, n_hashes=cfg.n_hashes, item_buckets=cfg.item_buckets)
        hashes = dict(con.execute("SELECT item_id, content_hash FROM clean_items").fetchall())
        log(f"item_embeddings: full embedding of {len(catalog):,} items ({reason})")
        xb = embed_items(model, catalog)
        table = _rows_table(np.arange(len(catalog)), catalog.item_ids, xb, version,
                            [hashes.get(i) for i in catalog.item_ids])
        stats = {"mode": "full", "reason": reason, "embedded": len(catalog), "added": len(catalog),
                 "changed": 0, "removed": 0}
        next_row = len(catalog)
    else:
        old = pq.read_table(folder / TABLE, columns=["row_id", "item_id", "content_hash"])  # noqa: F841 (DuckDB)
        delta = con.execute(
            f"""SELECT coalesce(c.item_id, o.item_id) AS item_id, o.row_id, c.item_id IS NOT NULL AS in_catalog
                FROM ({CATALOG_SQL}) c FULL JOIN old o USING (item_id)
                WHERE o.row_id IS NULL OR c.item_id IS NULL OR c.content_hash IS DISTINCT FROM o.content_hash""").df()
        embed = delta[delta.in_catalog]
        dropped = delta["row_id"].dropna().astype(np.int64).to_numpy()  # changed or gone
        stats = {"mode": "incremental", "reason": "same model", "embedded": len(embed),
                 "added": int(embed.row_id.isna().sum()), "changed": int(embed.row_id.notna().sum()),
                 "removed": int((~delta.in_catalog).sum())}
        log(f"item_embeddings: {stats['added']:,} new, {stats['changed']:,} changed, {stats['removed']:,} removed items")
        table = pq.read_table(folder / TABLE)
        if len(dropped):
            table = table.filter(pc.invert(pc.is_in(table["row_id"], pa.array(dropped, pa.int64()))))
        next_row = prev["next_row_id"]
        if len(embed):
            sub, _, _ = load_catalog(con, n_hashes=cfg.n_hashes, item_buckets=cfg.item_buckets,
                                     only=embed["item_id"].tolist())
            hashes = dict(con.execute(
                "SELECT item_id, content_hash FROM clean_items WHERE item_id IN (SELECT item_id FROM embed)").fetchall())
            xb_new = embed_items(model, sub)
            rows = np.arange(next_row, next_row + len(sub))
            next_row += len(sub)
            table = pa.concat_tables([table, _rows_table(rows, sub.item_ids, xb_new, version,
                                                         [hashes.get(i) for i in sub.item_ids])])
    path = folder / TABLE
    if reason or stats["embedded"] or stats["removed"]:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, tmp, row_group_size=65536)  # small groups: row_id filters skip old ones
        tmp.replace(path)  # same folder: atomic
        write_json_atomic(folder / "manifest.json", {
            "model_version": version, "vocabulary_fingerprint": fingerprint, "count": table.num_rows,
            "dim": table.schema.field("vector").type.list_size, "next_row_id": int(next_row),
            "sha256": file_sha256(path), "last_update": stats})
    stats.update(count=table.num_rows, seconds=round(time.perf_counter() - t0, 3))
    return stats


def refresh_index(root: Path, folder: Path, spec: IndexSpec, *, rebuild_share: float = 0.1, full: bool = False,
                  log=lambda m: None) -> tuple[ItemIndex, dict]:
    """Bring the index under `root` up to date with item_embeddings in `folder`; returns it and what it did."""
    t0 = time.perf_counter()
    emb = read_manifest(folder)
    if emb is None:
        raise FileNotFoundError(f"no item embeddings in {folder}: materialize item_embeddings first")
    idx = ItemIndex.load(root) if (root / "manifest.json").exists() and not full else None
    reason = ("asked" if full else "no index yet" if idx is None
              else "new model version" if idx.manifest.get("model_version") != emb["model_version"]
              else f"index kind {idx.kind} -> {spec.resolve(emb['count'])}" if idx.kind != spec.resolve(emb["count"])
              else None)
    stats: dict = {}
    if not reason:
        rows = pq.read_table(folder / TABLE, columns=["row_id"])["row_id"].to_numpy()
        removed = np.setdiff1d(idx.row_ids, rows, assume_unique=True)
        top = int(idx.row_ids.max()) if len(idx) else -1
        add_rows, add_items, xb = read_embeddings(folder, filters=[("row_id", ">", top)])
        if idx.kind != "flat" and (idx.manifest.get("changed_since_build", 0) + len(add_rows) + len(removed)
                                   > rebuild_share * max(1, len(rows))):
            reason = f"more than {rebuild_share:.0%} of the index changed since its build"
        else:
            stats = {"mode": "upsert", **idx.upsert(xb, add_rows, add_items, removed)}
            log(f"item_index: upserted {len(add_rows):,} rows, removed {len(removed):,} "
                f"({idx.kind}, {len(idx.stale):,} tombstones)")
    if reason:
        log(f"item_index: full build ({reason})")
        rows, items, xb = read_embeddings(folder)
        idx = ItemIndex.build(xb, rows, items, spec)
        stats = {"mode": "build", "reason": reason, "added": len(rows), "removed": 0, "stale": 0}
    idx.manifest.update({"model_version": emb["model_version"], "vocabulary_fingerprint": emb["vocabulary_fingerprint"],
                         "embeddings_sha256": emb["sha256"]})
    idx.save(root)
    stats.update(count=len(idx), seconds=round(time.perf_counter() - t0, 3))
    return idx, stats
