"""The cleaning rules: which events are valid, positive, negative or neutral, which values are
plausible. One dataclass, and the SQL parameters it implies (`sql_params`), so the assets, the
tests, the benchmarks and the CLI apply the same rules (sql/typed_events.sql, clean_*.sql)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from models.settings import setting

KNOWN_EVENT_TYPES = [
    "impression",
    "view",
    "click",
    "like",
    "share",
    "rating",
    "purchase",
    "add_to_cart",
    "play",
    "not_interested",
    "dislike",
]
TIMESTAMP_PARAMS = ("min_timestamp", "max_timestamp")


@dataclass
class CleaningRules:
    event_types: list[str] = setting(
        KNOWN_EVENT_TYPES,
        "Event types accepted as valid; any other type is quarantined as unknown_event_type.",
    )
    negative_types: list[str] = setting(
        ["not_interested", "dislike"],
        "Explicit negative feedback: never a positive, kept as hard-negative signal.",
    )
    neutral_types: list[str] = setting(["impression"], "Exposure without engagement: neither positive nor negative.")
    rating_types: list[str] = setting(["rating"], "Event types whose value is a rating that must lie in range.")
    rating_min: float = setting(0.5, "Lowest valid rating (MovieLens half stars start at 0.5).")
    rating_max: float = setting(5.0, "Highest valid rating: a 5-star scale; raise it for 10-point scales.")
    min_positive_rating: float = setting(
        0.0,
        "A rating counts as positive at or above this value (0 = every rating is a "
        "positive, the usual implicit-feedback reading of MovieLens); below it, negative.",
    )
    max_id_length: int = setting(128, "Longer ids are quarantined as oversized_id.")
    max_text_length: int = setting(2000, "Longer item titles are quarantined.")
    min_timestamp: str = setting("1995-01-01", "Earlier events are implausible (clock errors, epoch 0).")
    max_future_days: float = setting(1.0, "Events later than now + this many days are implausible.")

    def positive_types(self) -> list[str]:
        excluded = set(self.negative_types) | set(self.neutral_types)
        return [t for t in self.event_types if t not in excluded]

    def sql_params(self, now: datetime | None = None) -> dict:
        now = now or datetime.now(timezone.utc)
        return {
            "event_types": [t.lower() for t in self.event_types],
            "positive_types": self.positive_types(),
            "negative_types": list(self.negative_types),
            "rating_types": list(self.rating_types),
            "rating_min": self.rating_min,
            "rating_max": self.rating_max,
            "min_positive_rating": self.min_positive_rating,
            "max_id_length": self.max_id_length,
            "max_text_length": self.max_text_length,
            "min_timestamp": datetime.fromisoformat(self.min_timestamp),
            "max_timestamp": (now + timedelta(days=self.max_future_days)).replace(tzinfo=None),
        }

    def to_dict(self) -> dict:
        return asdict(self)


def params_to_json(params: dict) -> dict:
    """`sql_params()` as JSON (timestamps as ISO strings): what a cleaning run records, so a
    later check validates the table against the rules that built it, not today's defaults."""
    return {k: v.isoformat() if k in TIMESTAMP_PARAMS else v for k, v in params.items()}


def params_from_json(recorded: dict) -> dict:
    """The inverse of `params_to_json`."""
    return {k: datetime.fromisoformat(v) if k in TIMESTAMP_PARAMS else v for k, v in recorded.items()}
