"""Serving the generative retriever (no Dagster): `towerflow recommend --retriever generative`.

Loads the latest generative checkpoint and the current semantic-ID table, refuses a pair made by
different tokenizers, builds the prefix trie over every item in the table (items added after
training included: the incremental item path gives them codes with the same tokenizer), reads
the users' latest histories from the warehouse and beam-searches their next items; seen items
are removed from an over-generated beam. Unknown users get popular items, flagged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.generative.beam import PrefixTrie, beam_search, top_k_unseen
from models.generative.store import read_codes
from models.generative.training import latest_generative, load_generative
from models.serving.recommender import ServingError


class GenerativeRecommender:
    def __init__(self, con, artifacts: Path, users=None, threads: int | None = None):
        if threads is not None:
            torch.set_num_threads(threads)
        artifacts = Path(artifacts)
        version = latest_generative(artifacts / "generative")
        if not version:
            raise ServingError(
                "no generative retriever yet: materialize the generative group "
                "(dagster asset materialize --select 'group:generative')"
            )
        self.model, self.meta = load_generative(artifacts / "generative" / version)
        self.version = version
        try:
            sid, manifest = read_codes(artifacts / "semantic_ids")
        except FileNotFoundError as e:
            raise ServingError(str(e)) from e
        if manifest["tokenizer"] != self.meta["tokenizer"]:
            raise ServingError(
                f"the generative retriever {version} was trained on tokenizer {self.meta['tokenizer']}, "
                f"but the semantic IDs come from tokenizer {manifest['tokenizer']}: "
                "materialize generative_retriever"
            )
        self.item_ids = sid.item_ids
        self.trie = PrefixTrie(sid.codes, self.model.cfg.codebook_size)
        self.codes = torch.as_tensor(np.concatenate([sid.codes, np.full((1, 4), -1, np.int64)]))  # last row: padding
        self.beam = int(self.meta["train"]["beam"])
        index = pd.Index(self.item_ids)
        q = "SELECT user_id, item_id, ts FROM interaction_splits"
        if users is not None:
            wanted_users = pd.DataFrame({"user_id": pd.Series(list(users), dtype=object)})  # noqa: F841 (DuckDB)
            q += " WHERE user_id IN (SELECT user_id FROM wanted_users)"
        pairs = con.execute(q).df().sort_values(["user_id", "ts", "item_id"], kind="stable")
        pairs["row"] = index.get_indexer(pairs["item_id"])
        self._rows = {u: g["row"].to_numpy() for u, g in pairs.groupby("user_id", sort=False)}
        counts = con.execute(
            "SELECT item_id, count(*) AS n FROM interaction_splits GROUP BY 1 ORDER BY n DESC, item_id LIMIT 1000"
        ).fetchall()
        self._popular = [(i, float(n)) for i, n in counts if i in index]

    def histories(self, user_ids: list[str]) -> torch.Tensor:
        """(B, L, 4) codes of each user's last L items (left-padded; items without a code skipped)."""
        L = self.model.cfg.history_len
        hist = np.full((len(user_ids), L), -1, np.int64)
        for b, u in enumerate(user_ids):
            rows = self._rows[u]
            rows = rows[rows >= 0][-L:]
            hist[b, L - len(rows) :] = rows
        h = torch.as_tensor(hist)
        return self.codes[torch.where(h < 0, torch.full_like(h, len(self.codes) - 1), h)]

    def recommend(self, user_ids: list[str], k: int = 10) -> list[tuple[str, int, str, float, bool]]:
        """(user_id, rank, item_id, log-probability, fallback) rows; the beam is at least 2k wide so
        that k items remain once seen ones are removed."""
        if k < 1:
            raise ServingError(f"-k must be at least 1, got {k}")
        out = []
        known = [u for u in user_ids if u in self._rows]
        if known:
            beam = max(self.beam, 2 * k)
            items, scores = beam_search(self.model, self.trie, self.histories(known), beam)
            seen = [self._rows[u][self._rows[u] >= 0] for u in known]
            top = top_k_unseen(items, seen, k)
            score_of = [dict(zip(items[b].tolist(), scores[b].tolist())) for b in range(len(known))]
            for b, u in enumerate(known):
                out += [
                    (u, r + 1, self.item_ids[i], float(score_of[b][int(i)]), False)
                    for r, i in enumerate(top[b])
                    if i >= 0
                ]
        for u in user_ids:
            if u not in self._rows:
                out += [(u, r + 1, item, n, True) for r, (item, n) in enumerate(self._popular[:k])]
        order = {u: n for n, u in enumerate(user_ids)}
        return sorted(out, key=lambda row: (order[row[0]], row[1]))
