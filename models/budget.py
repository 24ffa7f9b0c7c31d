"""Training budgets count work, so the same data and seed give the same model on any machine.

The rule, for the two-tower (models/retrieval/training.py) and the ranker
(models/ranking/training.py): training stops at the first of

1. early stopping: `patience` validation checks in a row without a better validation figure;
2. the work budget: `examples_budget(rows, ...)` training examples (two-tower; the ranker's is
   its `epochs` of at least `min_steps` steps);
3. a wall-clock budget, only when asked (`max_minutes` > 0, off by default).

The examples budget grows with the data: `max_examples` examples, but never fewer than
`min_epochs` passes over the training rows and never more than `epochs` passes. Small data
(the demo's 32k rows, MovieLens' 99k) is capped by `epochs`, and early stopping usually ends it
sooner (MovieLens at the defaults: epoch 8); at 10M events (2.6M rows) 10M examples are 3.8
passes; at 100M events `min_epochs` gives 3.

Why no wall-clock budget by default: a budget in seconds makes the model depend on what else the
machine runs. Four 2-thread torch jobs on 2 cores made one MovieLens two-tower epoch take 453 s
instead of 15 s, and a 10-minute budget then stopped training at epoch 2 (valid NDCG@10 .052
instead of .083). Counted in work, the same data and seed give the same model, quiet or loaded
(tests/test_training_budget.py trains beside a busy CPU loop); only the time it takes differs
(benchmarks/bench_contention.py).
"""

from __future__ import annotations

import math
import time


def examples_budget(rows: int, *, epochs: int, max_examples: int, min_epochs: float) -> int:
    """Training examples a run may take: `max_examples`, raised to `min_epochs` passes over
    `rows` and lowered to `epochs` passes (0 = no `max_examples`: `epochs` passes)."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    if epochs < 1 or max_examples < 0 or min_epochs < 0:
        raise ValueError(
            f"epochs must be >= 1 and max_examples, min_epochs >= 0; got {epochs}, {max_examples}, {min_epochs}"
        )
    most = epochs * rows
    if not max_examples:
        return most
    return min(most, max(max_examples, math.ceil(min_epochs * rows)))


class WallClock:
    """An optional wall-clock budget: `spent()` is True once `max_minutes` have passed since it
    was made, and never when `max_minutes` is 0 (the default everywhere: see the module doc)."""

    def __init__(self, max_minutes: float) -> None:
        if max_minutes < 0:
            raise ValueError(f"max_minutes must be >= 0 (0 = no wall-clock budget), got {max_minutes}")
        self.max_minutes = max_minutes
        self.t0 = time.perf_counter()

    def spent(self) -> bool:
        return bool(self.max_minutes) and time.perf_counter() - self.t0 >= 60 * self.max_minutes


LR_SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The learning rate's multiplier at training step `step` of `total` (the work budget's
    steps): 1 (constant), or a linear warm-up over the first 1% of the steps, then a cosine
    decay to 0 at `total` (cosine)."""
    if schedule == "constant" or total <= 0:
        return 1.0
    warm = max(1, total // 100)
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
