"""What the online service knows about users, published as an artifact so it never opens the
warehouse (no Dagster here).

DuckDB allows one writing process, and even a read-only open fails while a job holds the write
lock; a service that read the warehouse at start or on reload would fail whenever the sensor's
or the schedule's job is running. So `write_user_histories` (the `user_histories` asset) writes
each known user's items (sql/user_histories.sql) and the most popular items
(sql/item_popularity.sql) as Parquet into a new folder and publishes it by replacing
manifest.json last, with each file's sha256; the service reads that, and the item features it
needs ride in item_embeddings. Histories are item ids, not catalog positions, so they stay valid
across model versions and index updates.

    artifacts/user_histories/<stamp>/users.parquet     user_id, items (list, oldest first)
    artifacts/user_histories/<stamp>/popular.parquet   item_id, pairs
    artifacts/user_histories/manifest.json             {"folder", "users", "pairs", "sha256": {...}}
"""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.artifacts import atomic_folder, file_sha256, read_manifest, write_manifest
from models.sql import sql_text

POPULAR_KEEP = 2000  # the fallback answers k <= 1000 after up to 1000 excluded items


def write_user_histories(con, folder: Path, keep: int = 2) -> dict:
    """Write users' items and item popularity into a new folder under `folder`, publish it; returns its manifest."""
    users = con.sql(sql_text("user_histories")).to_arrow_table()
    popular = con.sql(sql_text("item_popularity"), params={"limit": POPULAR_KEEP}).to_arrow_table()
    name = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]
    with atomic_folder(folder, name) as tmp:
        pq.write_table(users, tmp / "users.parquet")
        pq.write_table(popular, tmp / "popular.parquet")
    pairs = pc.sum(pc.list_value_length(users["items"])).as_py() or 0
    manifest = {
        "folder": name,
        "users": users.num_rows,
        "pairs": int(pairs),
        "popular": popular.num_rows,
        "sha256": {f: file_sha256(folder / name / f) for f in ("users.parquet", "popular.parquet")},
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_manifest(folder, manifest)
    old = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != name)
    for p in old[: max(0, len(old) - keep)]:
        shutil.rmtree(p, ignore_errors=True)
    return manifest


class UserHistories:
    """Known users' items as codes into one item-id vocabulary (CSR: `offsets` per user), so a
    new catalog order costs one lookup per distinct item, not per pair (`positions`)."""

    def __init__(self, folder: Path, manifest: dict | None = None, verify: bool = True):
        manifest = manifest or read_manifest(folder)
        if manifest is None:
            raise FileNotFoundError(f"no user histories in {folder}: materialize user_histories")
        self.manifest = manifest
        base = Path(folder) / manifest["folder"]
        if verify:
            for f, want in manifest["sha256"].items():
                got = file_sha256(base / f)
                if got != want:
                    raise ValueError(
                        f"{base / f}: sha256 {got[:12]} does not match the manifest's {want[:12]} "
                        "(damaged or half-written)"
                    )
        users = pq.read_table(base / "users.parquet")
        items = users["items"].combine_chunks()
        self.offsets = items.offsets.to_numpy().astype(np.int64)  # (U + 1,)
        encoded = items.values.dictionary_encode()  # one code per distinct item id
        self.codes = encoded.indices.to_numpy().astype(np.int64)  # (P,)
        self.item_vocab = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
        self.user_ids = np.asarray(users["user_id"].to_pylist(), dtype=object)
        self._row = {u: i for i, u in enumerate(self.user_ids.tolist())}
        popular = pq.read_table(base / "popular.parquet")
        self.popular_items = np.asarray(popular["item_id"].to_pylist(), dtype=object)
        self.popular_pairs = popular["pairs"].to_numpy().astype(np.float64)

    def __len__(self) -> int:
        return len(self.user_ids)

    def row(self, user_id) -> int:
        """The user's row, -1 for a user the histories do not know."""
        return self._row.get(user_id, -1)

    def positions(self, catalog) -> np.ndarray:
        """(P,) catalog positions of every pair's item (-1 where the catalog lacks it)."""
        return catalog.index_of(self.item_vocab)[self.codes] if len(self.codes) else np.zeros(0, np.int64)
