"""The CLI's and the batch assets' adapter over the retrieval rule (models/retrieval/inference.py):
the promoted checkpoint and the item index, checked to match, with the users' histories and the
popularity fallback read from the warehouse by the same SQL files the HTTP service's published
artifact is written from (no Dagster here)."""

from __future__ import annotations

import numpy as np

from models.artifacts import Layout
from models.retrieval.inference import Retriever, ServingError, answer_rows

__all__ = ["Recommender", "ServingError"]


class Recommender:
    """The promoted checkpoint and the item index, loaded together and checked to match.

    `con` is a (read-only) connection to the warehouse; `artifacts` the artifacts folder.
    `threads` sets torch's and FAISS's thread counts for this process: 1 for one request at a
    time (a single user's work is too small to split: at 1M items 2 threads took p99 from
    1.2 ms to 44 ms, waking threads), None to leave them for batch work. `users` limits what
    is loaded to those users (and their items' features, plus `recent_items`' features): quick
    to start for a few requests; other users then get a session answer or the popularity
    fallback. `core` is the Retriever that answers.
    """

    def __init__(self, con, artifacts, threads: int | None = None, users=None, recent_items=()):
        import torch

        from models.index.item_index import ItemIndex
        from models.retrieval.checkpoint import champion_version, load_checkpoint
        from models.retrieval.data import load_catalog
        from models.retrieval.histories import UserHistories

        if threads is not None:
            import faiss

            torch.set_num_threads(threads)
            faiss.omp_set_num_threads(threads)
        version = champion_version(artifacts)
        if not version or not (Layout(artifacts).index / "manifest.json").exists():
            raise ServingError("no promoted model and index yet: run `make demo` (or materialize the graph)")
        index = ItemIndex.load(Layout(artifacts).index)
        built_from = index.manifest.get("model_version")
        if built_from != version:
            raise ServingError(
                f"the index was built from model {built_from} but the current model is {version}: "
                "materialize item_embeddings and item_index"
            )
        fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
        if index.manifest.get("vocabulary_fingerprint") != fingerprint:
            raise ServingError(
                "the index was built under another vocabulary than the warehouse's: "
                "materialize the graph (training included) again"
            )
        model, _, _ = load_checkpoint(Layout(artifacts).models / version, expected_fingerprint=fingerprint)
        t = model.cfg
        histories = UserHistories.from_warehouse(con, users)
        # serving a few users needs the features of their items only, not the whole catalog
        only = None if users is None else sorted(set(histories.item_ids()) | set(recent_items))
        catalog, _, _ = load_catalog(con, n_hashes=t.n_hashes, item_buckets=t.item_buckets, only=only)
        self.version = version
        self.core = Retriever(model, catalog, index, histories)

    @property
    def index(self):
        return self.core.index

    @property
    def user_ids(self) -> np.ndarray:
        """The known users loaded, in row order (the core's rows)."""
        return self.core.user_ids

    def recommend(
        self, user_ids: list[str], k: int = 10, recent_items: list[str] | None = None
    ) -> list[tuple[str, int, str, float, bool]]:
        """(user_id, rank, item_id, score, fallback) rows, users in the order given; `recent_items`
        (latest last) extend every user's history (a session for an unknown user)."""
        if k < 1:
            raise ServingError(f"-k must be at least 1, got {k}")
        recent = list(recent_items or [])
        return answer_rows(self.core.answer([{"user_id": u, "k": k, "recent_items": recent} for u in user_ids]))

    def candidates(self, user_ids, n: int):
        """The top n retrieved items of each known user among `user_ids` (the ranker's input)."""
        return self.core.candidates(user_ids, n)

    def similar(self, item_id: str, k: int = 10) -> list[tuple[str, int, str, float]]:
        (found,) = self.core.similar([{"item_id": item_id, "k": k}])
        if found is None:
            raise ServingError(f"unknown item {item_id!r}")
        return [(item_id, r + 1, i["item_id"], i["score"]) for r, i in enumerate(found["items"])]
