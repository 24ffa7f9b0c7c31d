"""SparseAdam for the id tables, updating the touched rows with row gathers and `index_add_`.

torch.optim.SparseAdam reads the moments of the touched rows with `sparse_mask` and writes
them back by adding sparse tensors to the dense tables: at 1M items (a 2M x 32 item table)
those five sparse operations took 13-25 ms a step, as long as the towers' whole forward pass
over the batch. `RowSparseAdam` does the same arithmetic on the same coalesced rows in the same
order, through `index_select` and `index_add_` (each row appears once, so each add is the one
float addition the sparse add makes): the same bits, at a fraction of the cost. It is a
SparseAdam, so its state dict is SparseAdam's and checkpoints load either way.
"""

from __future__ import annotations

import math

import torch


def row_sparse_adam(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    state_steps: list[int],
    *,
    eps: float,
    beta1: float,
    beta2: float,
    lr: float,
    maximize: bool,
) -> None:
    """torch.optim._functional.sparse_adam's update, row by row instead of through sparse tensors."""
    for param, grad, exp_avg, exp_avg_sq, step in zip(params, grads, exp_avgs, exp_avg_sqs, state_steps):
        grad = (grad if not maximize else -grad).coalesce()  # the update is non-linear: unique rows
        rows = grad._indices()[0]  # (R,) unique, ascending
        values = grad._values()  # (R, d)
        if values.numel() == 0:
            continue
        # old <- b * old + (1 - b) * new, written old += (1 - b) * (new - old) as SparseAdam does
        old_avg = exp_avg.index_select(0, rows)  # (R, d)
        avg_update = values.sub(old_avg).mul_(1 - beta1)
        exp_avg.index_add_(0, rows, avg_update)
        old_sq = exp_avg_sq.index_select(0, rows)  # (R, d)
        sq_update = values.pow(2).sub_(old_sq).mul_(1 - beta2)
        exp_avg_sq.index_add_(0, rows, sq_update)
        numer = avg_update.add_(old_avg)  # the new moments of the rows, as SparseAdam recomputes them
        denom = sq_update.add_(old_sq).sqrt_().add_(eps)
        step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        param.index_add_(0, rows, numer.div_(denom).mul_(-step_size))


class RowSparseAdam(torch.optim.SparseAdam):
    """SparseAdam (same state, same updates, same bits) through row gathers and index_add_."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError(f"RowSparseAdam needs sparse gradients; {tuple(p.shape)} got a dense one")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            beta1, beta2 = group["betas"]
            row_sparse_adam(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                steps,
                eps=group["eps"],
                beta1=beta1,
                beta2=beta2,
                lr=float(group["lr"]),
                maximize=group.get("maximize", False),
            )
        return loss
