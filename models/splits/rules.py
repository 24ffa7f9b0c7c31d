"""Split and vocabulary rules, each with the SQL parameters it implies (sql/interaction_splits.sql,
sql/vocabularies.sql): the assets, the tests and the benchmarks build the same tables."""

from __future__ import annotations

from dataclasses import dataclass

from models.settings import setting

STRATEGIES = ("leave_last_out", "global_time")


@dataclass
class SplitRules:
    strategy: str = setting(
        "leave_last_out",
        "leave_last_out (per user: last positive -> test, second last -> valid) or "
        "global_time (one time cut for everyone, closer to production).",
    )
    min_user_positives: int = setting(3, "leave_last_out: users with fewer positive pairs stay in train only.")
    valid_start: str | None = setting(None, "global_time: first valid timestamp (default: 0.8 quantile).")
    test_start: str | None = setting(None, "global_time: first test timestamp (default: 0.9 quantile).")

    def sql_params(self) -> dict:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"split strategy must be leave_last_out or global_time, got {self.strategy!r}")
        return {
            "strategy": self.strategy,
            "min_user_positives": self.min_user_positives,
            "valid_start": self.valid_start,
            "test_start": self.test_start,
        }


@dataclass
class VocabularyRules:
    num_buckets: int = setting(
        64,
        "Hash buckets (indices 1..n) that unseen or rare keys share, so a "
        "new id still gets a trained embedding instead of padding.",
    )
    min_count_ids: int = setting(
        1,
        "A user/item id needs this many train pairs to get its own index; an item "
        "id below it counts as never trained and is embedded by content alone.",
    )
    min_count_features: int = setting(2, "A category / title token needs this many train interactions.")

    def sql_params(self) -> dict:
        return {
            "num_buckets": self.num_buckets,
            "min_count_ids": self.min_count_ids,
            "min_count_features": self.min_count_features,
        }
