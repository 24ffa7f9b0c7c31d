"""The online service's settings (no heavy imports: the CLI reads its defaults from here)."""

from dataclasses import dataclass, field
from pathlib import Path

from models.clean.rules import CleaningRules
from models.ranking import DEFAULT_CANDIDATES

AB_MODES = ("split", "shadow")


def feedback_actions() -> tuple[str, ...]:
    """What a client may report on a served item: every event type the cleaning accepts but the
    neutral ones (an impression is the service's to log, not a client's)."""
    rules = CleaningRules()
    return tuple(t for t in rules.event_types if t not in rules.neutral_types)


@dataclass
class ServeConfig:
    max_id_length: int  # longer user / item ids are refused: the cleaning's limit (CleaningRules)
    max_batch: int = 64  # requests answered by one forward + one search
    max_wait_ms: float = 0.0  # how long the first request of a batch waits for company (0: batch
    # what is queued; batches still grow with load while each batch runs)
    reload_seconds: float = 1.0  # manifest polling period
    retry_seconds: float = 30.0  # a refused snapshot is retried after this even if nothing changed
    token: str | None = None  # bearer token; None = no auth
    rank_candidates: int = DEFAULT_CANDIDATES  # retrieved candidates handed to the ranker when rank is true
    threads: int = 1  # torch / FAISS threads answering batches
    worker_thread: bool = False  # answer batches on a worker thread instead of the event loop (MicroBatcher)
    # A/B: the challenger (models manifest "challenger", registry alias `challenger`) beside the champion
    challenger_share: float = 0.0  # share of users (stable hash) the challenger answers in split mode
    ab_mode: str = "split"  # split: the share gets the challenger's answer | shadow: everyone gets the
    # champion's, the challenger scores every request too and its answer is logged, not returned
    # what was served and the feedback on it, as landing events (models/serving/eventlog.py)
    events_folder: Path | None = None  # landing/events; None = nothing logged, /feedback answers 409
    shadow_folder: Path | None = None  # the shadow answers (not exposures: kept out of landing)
    rotate_bytes: int = 8 << 20  # a log file is handed to the ingest past this size...
    rotate_seconds: float = 60.0  # ...or this long after its first line
    remembered_requests: int = 100_000  # answered request ids /feedback accepts (LRU)
    feedback_actions: tuple[str, ...] = field(default_factory=feedback_actions)  # accepted /feedback actions

    def __post_init__(self):
        if not 0.0 <= self.challenger_share <= 1.0:
            raise ValueError(f"challenger_share must lie in [0, 1], got {self.challenger_share}")
        if self.ab_mode not in AB_MODES:
            raise ValueError(f"ab_mode must be split or shadow, got {self.ab_mode!r}")
