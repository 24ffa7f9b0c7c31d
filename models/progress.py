"""Progress lines for long work: count, share, rate and ETA at most every `every` seconds, so a
user watching a run's log can tell a slow run from a stuck one."""

from __future__ import annotations

import time
from typing import Callable


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    """`update(n)` after each piece of work; a line goes to `log` when `every` seconds have passed
    since the last one (and never for work that ends sooner)."""

    def __init__(self, what: str, total: int, unit: str, log: Callable[[str], None] | None, every: float = 30.0):
        self.what, self.total, self.unit, self.log, self.every = what, int(total), unit, log, every
        self.done = 0
        self.t0 = self.last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if self.log is None or now - self.last < self.every:
            return
        self.last = now
        rate = self.done / max(now - self.t0, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        self.log(
            f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({self.done / max(self.total, 1):.0%}), "
            f"{rate:,.1f} {self.unit}/s, elapsed {_duration(now - self.t0)}, ETA {_duration(left)}"
        )
