"""The online service's settings (no heavy imports: the CLI reads its defaults from here)."""

from dataclasses import dataclass

from models.ranking import DEFAULT_CANDIDATES


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
