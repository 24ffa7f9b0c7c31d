"""What every way of answering knows about users: each known user's items (oldest first) and the
most popular items, from two SQL files, read from the warehouse or from the published artifact
(no Dagster here).

    sql/user_histories.sql    user_id, items (the user's items, oldest first)
    sql/item_popularity.sql   item_id, pairs (the POPULAR_KEEP most popular items)

DuckDB allows one writing process, and even a read-only open fails while a job holds the write
lock; a service that read the warehouse at start or on reload would fail whenever the sensor's
or the schedule's job is running. So `write_user_histories` (the `user_histories` asset) writes
both queries' results as Parquet into a new folder and publishes it by replacing manifest.json
last, with each file's sha256; the HTTP service (and the MLflow model's bundle) read that, and
the item features they need ride in item_embeddings. The CLI and the batch assets, which hold a
warehouse connection, run the same two files directly (`UserHistories.from_warehouse`), so every
path reads histories and popularity by one rule. Histories are item ids, not catalog positions,
so they stay valid across model versions and index updates.

    <folder>/<stamp>/users.parquet     user_id, items (list, oldest first)
    <folder>/<stamp>/popular.parquet   item_id, pairs
    <folder>/manifest.json             {"folder", "users", "pairs", "popular", "sha256": {...}}
"""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.artifacts import atomic_folder, file_sha256, read_manifest, write_manifest

POPULAR_KEEP = 2000  # the popularity fallback answers k <= 1000 after up to 1000 excluded items


def _sql(name: str) -> str:
    from models.sql import sql_text  # lazy: a logged MLflow model reads histories without the sql package

    return sql_text(name)


def query_user_histories(con, users=None) -> pa.Table:
    """sql/user_histories.sql, all known users or the known ones among `users`."""
    if users is None:
        return con.sql(_sql("user_histories")).to_arrow_table()
    wanted_users = pd.DataFrame({"user_id": pd.Series(list(users), dtype=object)})  # noqa: F841 (DuckDB)
    return con.sql(
        f"SELECT * FROM ({_sql('user_histories')}) WHERE user_id IN (SELECT user_id FROM wanted_users) ORDER BY user_id"
    ).to_arrow_table()


def query_item_popularity(con) -> pa.Table:
    """sql/item_popularity.sql: the POPULAR_KEEP most popular items, most popular first."""
    return con.sql(_sql("item_popularity"), params={"limit": POPULAR_KEEP}).to_arrow_table()


def write_user_histories(con, folder: Path, keep: int = 2) -> dict:
    """Write users' items and item popularity into a new folder under `folder`, publish it; returns its manifest."""
    users = query_user_histories(con)
    popular = query_item_popularity(con)
    folder = Path(folder)
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
    new catalog order costs one lookup per distinct item, not per pair (`positions`), and the
    most popular items (`popular_items`, `popular_pairs`)."""

    def __init__(self, users: pa.Table, popular: pa.Table, manifest: dict | None = None):
        self.manifest = manifest or {}
        items = users["items"].combine_chunks()
        self.offsets = items.offsets.to_numpy().astype(np.int64)  # (U + 1,)
        encoded = items.values.dictionary_encode()  # one code per distinct item id
        self.codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)  # (P,)
        self.item_vocab = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
        self.user_ids = np.asarray(users["user_id"].to_pylist(), dtype=object)
        self._row = {u: i for i, u in enumerate(self.user_ids.tolist())}
        self.popular_items = np.asarray(popular["item_id"].to_pylist(), dtype=object)
        self.popular_pairs = popular["pairs"].to_numpy().astype(np.float64)

    @classmethod
    def read(cls, folder: Path, manifest: dict | None = None, verify: bool = True) -> "UserHistories":
        """The published histories under `folder` (its manifest, or the one given)."""
        manifest = manifest or read_manifest(folder)
        if manifest is None:
            raise FileNotFoundError(f"no user histories in {folder}: materialize user_histories")
        base = Path(folder) / manifest["folder"]
        if verify:
            for f, want in manifest["sha256"].items():
                got = file_sha256(base / f)
                if got != want:
                    raise ValueError(
                        f"{base / f}: sha256 {got[:12]} does not match the manifest's {want[:12]} "
                        "(damaged or half-written)"
                    )
        return cls(pq.read_table(base / "users.parquet"), pq.read_table(base / "popular.parquet"), manifest)

    @classmethod
    def from_warehouse(cls, con, users=None, popular: bool = True) -> "UserHistories":
        """The same two queries the artifact publishes, run on the warehouse (`users`: only these;
        `popular` False: no popularity, for callers that only embed users)."""
        pop = (
            query_item_popularity(con)
            if popular
            else pa.table({"item_id": pa.array([], pa.string()), "pairs": pa.array([], pa.int64())})
        )
        return cls(query_user_histories(con, users), pop)

    def __len__(self) -> int:
        return len(self.user_ids)

    def row(self, user_id) -> int:
        """The user's row, -1 for a user the histories do not know."""
        return self._row.get(user_id, -1)

    def items_of(self, row: int) -> np.ndarray:
        """The user's item ids, oldest first."""
        s, e = self.offsets[row], self.offsets[row + 1]
        return self.item_vocab[self.codes[s:e]]

    def item_ids(self) -> list:
        """Every distinct item id the histories hold."""
        return self.item_vocab.tolist()

    def positions_by(self, index_of) -> np.ndarray:
        """(P,) position of every pair's item under `index_of` (item ids -> positions, -1 unknown)."""
        return np.asarray(index_of(self.item_vocab), np.int64)[self.codes] if len(self.codes) else np.zeros(0, np.int64)

    def positions(self, catalog) -> np.ndarray:
        """(P,) catalog positions of every pair's item (-1 where the catalog lacks it)."""
        return self.positions_by(catalog.index_of)
