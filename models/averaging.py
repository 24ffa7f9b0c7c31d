"""The weights' moving average, one rule for the two-tower (models/retrieval/training.py) and the
generative retriever (models/generative/training.py): validate, keep and serve an exponential
moving average of the weights (`ema_decay` in each trainer's config, 0 = the trained weights).

torch's AveragedModel keeps the copy; it is updated after every `ema_every(n_params)` steps with
decay min(ema_decay, (1 + t) / (10 + t)) per step t (TensorFlow ExponentialMovingAverage's
num_updates rule: early in a run the average spans about the last tenth of the steps, later at
most ~1 / (1 - ema_decay) steps, so a short run never averages in its first weights). Training
never reads the average: each check judges it, early stopping keeps its best state.
"""

from __future__ import annotations

import math

import torch

EMA_PARAMS_PER_STEP = 10_000_000  # the average's update is a memory-bound lerp over every weight


def check_ema_decay(decay: float) -> None:
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1) (0 = no average), got {decay!r}")


def ema_every(n_params: int) -> int:
    """Steps between updates of the weights' moving average: one per step up to 10M weights
    (MovieLens at 128 wide: 7.8M), then as many steps as 10M-weight blocks, so the update costs a
    few percent of a step at any size (1M items, 64 wide: 71M weights, a 22 ms lerp beside a
    79 ms step, loaded: every 8 steps)."""
    return max(1, math.ceil(n_params / EMA_PARAMS_PER_STEP))


def ema_with_warmup(decay: float, every: int = 1):
    """AveragedModel's multi_avg_fn for an update every `every` steps: an exponential moving
    average whose per-step decay at step t is min(decay, (1 + t) / (10 + t)) (TensorFlow's
    ExponentialMovingAverage with num_updates), raised to the steps the update covers."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        t = float(num_averaged) * every
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + t) / (10.0 + t)) ** every)

    return update


def moving_average(
    model: torch.nn.Module, decay: float, *, use_buffers: bool
) -> tuple[torch.optim.swa_utils.AveragedModel | None, int]:
    """(the average of `model`'s weights, steps between its updates), or (None, 0) when decay is
    0. Call `averaged.update_parameters(model)` after every `every`-th step; judge and keep
    `averaged.module`. use_buffers: average the buffers too (False where they are constants)."""
    if not decay:
        return None, 0
    every = ema_every(sum(p.numel() for p in model.parameters()))
    averaged = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=ema_with_warmup(decay, every), use_buffers=use_buffers
    )
    return averaged, every
