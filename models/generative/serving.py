"""Serving the generative retriever (no Dagster): `towerflow recommend --retriever generative`.

Loads the promoted generative checkpoint and its codes (models.generative.store.pair_codes:
item_semantic_ids' table when the checkpoint's tokenizer made it, so items added after training
are included, else the checkpoint's own), builds the prefix trie over every item in them, and
beam-searches known users' next items from their histories. What is not the beam is the
two-tower's serving rule (models/retrieval/inference.py): the histories and the popularity
fallback come from the same SQL files (`UserHistories.from_warehouse`), everything a user
interacted with is excluded (removed from an over-generated beam), and unknown users get the
most popular items (those with a semantic ID), flagged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.artifacts import Layout
from models.generative.beam import PrefixTrie, generate_unseen
from models.generative.store import pair_codes
from models.generative.training import load_generative, promoted_generative_version
from models.retrieval.histories import UserHistories
from models.retrieval.inference import ServingError, top_popular
from models.retrieval.data import id_index


class GenerativeRecommender:
    def __init__(self, con, artifacts: Path, users=None, threads: int | None = None):
        if threads is not None:
            torch.set_num_threads(threads)
        artifacts = Path(artifacts)
        version = promoted_generative_version(Layout(artifacts).generative)
        if not version:
            raise ServingError(
                "no promoted generative retriever yet: materialize the generative group "
                "(dagster asset materialize --select 'group:generative')"
            )
        self.model, self.meta = load_generative(Layout(artifacts).generative / version)
        self.version = version
        try:
            sid, _ = pair_codes(artifacts, Layout(artifacts).generative / version, self.meta)
        except FileNotFoundError as e:
            raise ServingError(str(e)) from e
        self.item_ids = sid.item_ids
        self.trie = PrefixTrie(sid.codes, self.model.cfg.level_sizes)
        self.codes = torch.as_tensor(np.concatenate([sid.codes, np.full((1, 4), -1, np.int64)]))  # last row: padding
        self.beam = int(self.meta["train"]["beam"])
        index = id_index(self.item_ids)
        self.histories = UserHistories.from_warehouse(con, users)
        self._pair_rows = self.histories.positions_by(lambda ids: index.get_indexer(pd.Series(ids, dtype=object)))
        has_code = index.get_indexer(pd.Series(self.histories.popular_items, dtype=object)) >= 0
        self._popular = (self.histories.popular_items[has_code], self.histories.popular_pairs[has_code])

    def _rows(self, user_id) -> np.ndarray:
        """Semantic-ID table rows of a known user's items, oldest first (items without a code skipped)."""
        row = self.histories.row(user_id)
        rows = self._pair_rows[self.histories.offsets[row] : self.histories.offsets[row + 1]]
        return rows[rows >= 0]

    def histories_of(self, user_ids: list[str]) -> torch.Tensor:
        """(B, L, 4) codes of each known user's last L items (left-padded)."""
        L = self.model.cfg.history_len
        hist = np.full((len(user_ids), L), -1, np.int64)
        for b, u in enumerate(user_ids):
            rows = self._rows(u)[-L:]
            hist[b, L - len(rows) :] = rows
        h = torch.as_tensor(hist)
        return self.codes[torch.where(h < 0, torch.full_like(h, len(self.codes) - 1), h)]

    def recommend(self, user_ids: list[str], k: int = 10) -> list[tuple[str, int, str, float, bool]]:
        """(user_id, rank, item_id, log-probability, fallback) rows: k per user, the beam widened
        for a user whose seen items filled it (models.generative.beam.generate_unseen), fewer
        only where the catalog has fewer than k items the user has not seen."""
        if k < 1:
            raise ServingError(f"-k must be at least 1, got {k}")
        out = []
        known = [u for u in user_ids if self.histories.row(u) >= 0]
        if known:
            top, scores = generate_unseen(
                self.model, self.trie, self.histories_of(known), [self._rows(u) for u in known], k, self.beam
            )
            for b, u in enumerate(known):
                out += [
                    (u, r + 1, self.item_ids[i], float(scores[b, r]), False) for r, i in enumerate(top[b]) if i >= 0
                ]
        pop_items, pop_scores = top_popular(*self._popular, [], k)
        for u in user_ids:
            if self.histories.row(u) < 0:
                out += [(u, r + 1, item, float(n), True) for r, (item, n) in enumerate(zip(pop_items, pop_scores))]
        order = {u: n for n, u in enumerate(user_ids)}
        return sorted(out, key=lambda row: (order[row[0]], row[1]))
