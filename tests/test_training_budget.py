"""Validation checks inside an epoch and the training time budget (real torch, planted data)."""

from __future__ import annotations

from models.retrieval.training import TrainConfig, train
from tests.test_training import data  # noqa: F401 (the planted-data fixture)


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


def test_time_budget_stops_training_and_keeps_the_best_weights(data):  # noqa: F811
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
