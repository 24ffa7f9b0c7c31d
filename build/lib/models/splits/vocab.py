"""Vocabularies with hash-bucket fallback, as built by sql/vocabularies.sql.

Index layout: 0 = padding, 1..num_buckets = shared hash buckets for keys unseen in train (or
below the frequency floor), num_buckets+1.. = known keys. A brand-new user or item therefore
maps to a trained bucket embedding, never to padding. The bucket hash is CRC32 of the UTF-8 key:
stable across processes and Python versions (Python's hash() is salted per process).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

PAD = 0


def bucket_of(key: str, num_buckets: int) -> int:
    """The hash bucket (1..num_buckets) of an unseen key."""
    return 1 + zlib.crc32(key.encode("utf-8")) % num_buckets


@dataclass
class Vocabulary:
    name: str
    keys: np.ndarray  # (V,) object: known keys
    ids: np.ndarray  # (V,) int64: their indices, all > num_buckets
    num_buckets: int

    def __post_init__(self) -> None:
        assert len(self.keys) == len(self.ids), "keys and ids differ in length"
        if len(self.ids) and self.ids.min() <= self.num_buckets:
            raise ValueError(f"vocabulary {self.name}: known ids must start above the {self.num_buckets} buckets")
        self._index = pd.Index(self.keys)
        if not self._index.is_unique:
            raise ValueError(f"vocabulary {self.name}: duplicate keys")

    @property
    def size(self) -> int:
        """Embedding rows needed: padding + buckets + known keys."""
        return int(max(self.ids.max(initial=0), self.num_buckets) + 1)

    def encode(self, keys) -> np.ndarray:
        """(N,) keys -> (N,) int64 indices; None -> padding, unseen -> its hash bucket."""
        keys = pd.Series(keys, dtype=object)
        pos = self._index.get_indexer(keys)
        out = np.where(pos >= 0, self.ids[np.maximum(pos, 0)], PAD).astype(np.int64)
        for i in np.flatnonzero(pos < 0):
            k = keys.iat[i]
            out[i] = PAD if k is None or (isinstance(k, float) and np.isnan(k)) else bucket_of(str(k), self.num_buckets)
        return out

    def is_known(self, keys) -> np.ndarray:
        return self._index.get_indexer(pd.Series(keys, dtype=object)) >= 0

    @classmethod
    def from_duckdb(cls, con, name: str) -> "Vocabulary":
        """Load one vocabulary (user_id, item_id, category, title_token) from the warehouse."""
        num_buckets = con.execute("SELECT num_buckets FROM vocabulary_info").fetchall()[0][0]
        df = con.execute("SELECT key, idx FROM vocabularies WHERE vocabulary = $v ORDER BY idx", {"v": name}).df()
        if df.empty:
            raise ValueError(f"vocabulary {name!r} is empty or unknown: materialize `vocabularies` first")
        return cls(name, df["key"].to_numpy(object), df["idx"].to_numpy(np.int64), int(num_buckets))
