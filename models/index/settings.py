"""How the graph keeps the item embeddings and their index current, beyond the index's own
build parameters (IndexSpec): when to rebuild, how a build tunes its search and how the
blocking check measures it. The defaults live here once; the Dagster configs
(assets/serving/config.py) are derived from them."""

from __future__ import annotations

from dataclasses import dataclass

from models.settings import setting


@dataclass
class IndexRefresh:
    tune: bool = setting(
        True,
        "Every ANN build picks the cheapest nprobe / efSearch whose "
        "recall@10 on real user vectors reaches recall_threshold + tune_margin (FAISS "
        "ParameterSpace), records it in the manifest and serves with it.",
    )
    tune_sample: int = setting(
        1000,
        "User vectors the tuning measures recall on (other "
        "users than the recall check's, so the check stays an independent measurement).",
    )
    tune_margin: float = setting(
        0.01,
        "Tune to this much above recall_threshold, so the "
        "blocking check on other users is not a coin flip at the threshold.",
    )
    recall_threshold: float = setting(
        0.95, "Blocking check: recall@10 against exact search on real user vectors must reach this."
    )
    recall_sample: int = setting(2000, "User vectors sampled for the recall check.")
    rebuild_share: float = setting(
        0.1,
        "Rebuild instead of upserting once the delta "
        "segment plus the tombstoned main rows pass this share of the index.",
    )
    full: bool = setting(False, "Rebuild even when an upsert would do.")

    @property
    def tune_target(self) -> float:
        """The recall@10 a tuned build aims at."""
        return min(1.0, self.recall_threshold + self.tune_margin)


@dataclass
class EmbeddingRefresh:
    full: bool = setting(
        False,
        "Re-embed every item even when the model is unchanged (otherwise only new or changed items are embedded).",
    )
