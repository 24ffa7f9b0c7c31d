"""Training budgets count work (models/budget.py): validation checks inside an epoch, the
examples budget, the wall-clock budget only when asked, and the same model beside a busy CPU
(real torch, planted data, a real spinning process)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from models.budget import examples_budget
from models.retrieval.training import TrainConfig, train
from tests.test_training import data, planted  # noqa: F401 (the planted-data fixtures)


def test_examples_budget_rule():
    # 10M examples where that lies between min_epochs (3) and epochs (30) passes
    assert examples_budget(2_600_000, epochs=30, max_examples=10_000_000, min_epochs=3) == 10_000_000
    # small data: 30 passes of 99k rows (3M) are under 10M, so the epoch cap decides
    assert examples_budget(99_000, epochs=30, max_examples=10_000_000, min_epochs=3) == 30 * 99_000
    # large data: 3 passes of 26M rows (78M) are over 10M, so the budget grows with the data
    assert examples_budget(26_000_000, epochs=30, max_examples=10_000_000, min_epochs=3) == 78_000_000
    # 0 = no examples cap: epochs passes; fractional minimum passes round up to a whole example
    assert examples_budget(1_000, epochs=4, max_examples=0, min_epochs=3) == 4_000
    assert examples_budget(1_001, epochs=4, max_examples=10, min_epochs=0.5) == 501
    with pytest.raises(ValueError, match="rows"):
        examples_budget(0, epochs=4, max_examples=10, min_epochs=1)


def test_checks_inside_an_epoch_and_a_sampled_validation_set(data):  # noqa: F811
    d, tower, _ = data
    lines = []
    every = len(d.train) // 3 + 1
    res = train(
        d.catalog,
        d.train,
        tower,
        TrainConfig(epochs=2, batch_size=256, valid_every=every, valid_users=50, patience=10),
        valid=d.valid,
        log=lines.append,
    )
    # 3 checks an epoch: two inside it (every third of the rows) and one at its end
    assert len(res.history) == 6 and res.history[-1]["epoch"] == 2.0
    assert [r["epoch"] < 1 for r in res.history[:2]] == [True, True]
    assert res.stopped_by == "max_epochs" and res.epochs == 2.0
    assert any("over 50 users" in line for line in lines)


def test_examples_budget_stops_inside_an_epoch(data):  # noqa: F811
    d, tower, _ = data
    rows = len(d.train)
    res = train(
        d.catalog,
        d.train,
        tower,
        TrainConfig(epochs=5, batch_size=64, max_examples=rows * 3 // 2, min_epochs=0, patience=10),
        valid=d.valid,
        log=lambda m: None,
    )
    # 1.5 passes: the budget ends inside the second epoch, within one batch of its count
    assert res.stopped_by == "max_examples"
    assert rows * 3 // 2 <= res.examples < rows * 3 // 2 + 64
    assert [r["epoch"] for r in res.history] == [1.0, round(res.examples / rows, 3)]


def test_a_wall_clock_budget_when_asked_stops_training_and_keeps_the_best_weights(data):  # noqa: F811
    d, tower, _ = data
    res = train(
        d.catalog,
        d.train,
        tower,
        TrainConfig(epochs=50, batch_size=64, max_minutes=0.05),
        valid=d.valid,
        log=lambda m: None,
    )
    assert res.stopped_by == "time_budget"
    assert res.epochs < 50 and res.history  # a last check closes the partial period
    assert res.best_valid["valid_ndcg@10"] == max(r["valid_ndcg@10"] for r in res.history)


def _default_training(d, tower):
    """The default TrainConfig but 3 epochs (the other budgets and the wall clock as shipped), on
    the tests' one torch thread: the model is the same for a given thread count (two threads
    gave equal figures too; benchmarks/bench_contention.py trains on every CPU)."""
    res = train(d.catalog, d.train, tower, TrainConfig(epochs=3), valid=d.valid, log=lambda m: None)
    return res.stopped_by, res.examples, [(r["epoch"], r["valid_ndcg@10"]) for r in res.history]


@pytest.fixture(scope="module")
def quiet(data):  # noqa: F811
    d, tower, _ = data
    return _default_training(d, tower)


def test_default_budget_ends_by_work_not_by_the_clock(data, quiet, monkeypatch):  # noqa: F811
    # a clock that jumps an hour at every reading: any budget in seconds would stop at once
    hours = iter(range(10**9))
    monkeypatch.setattr(time, "perf_counter", lambda: 3600.0 * next(hours))
    d, tower, _ = data
    assert _default_training(d, tower) == quiet
    assert quiet[0] in ("early_stopping", "max_epochs")


@pytest.mark.slow
def test_the_same_model_beside_a_busy_cpu_loop(data, quiet):  # noqa: F811
    d, tower, _ = data
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = _default_training(d, tower)
        assert spinner.poll() is None, "the busy loop ended before training did"
        if os.path.exists(f"/proc/{spinner.pid}/stat"):  # it really took CPU beside the training
            utime = int(open(f"/proc/{spinner.pid}/stat").read().rsplit(")", 1)[1].split()[11])
            assert utime > 0
    finally:
        spinner.kill()
        spinner.wait()
    # the same epochs, examples and validation figures, to the last bit
    assert busy == quiet
    assert len(quiet[2]) >= 2
