"""Retrieval losses over L2-normalised user and item vectors.

InfoNCE / sampled softmax with temperature, as in "Sampling-Bias-Corrected Neural Modeling"
(Yi et al., 2019) and "Mixed Negative Sampling" (Yang et al., 2020):

- in-batch negatives: the other rows' positives;
- logQ correction: subtract log q_j (the probability that item j shows up as a negative),
  so popular items are not over-penalised just for being sampled often;
- accidental-hit masking: a column holding the row's own positive item (another row shares
  it) is not a negative;
- optional extra negatives shared across the batch (uniform over the catalog) and per-row
  hard negatives (the user's own negative feedback, as X's Phoenix uses), padding-masked.

Full-catalog cross-entropy (`full_softmax`): when the catalog is small enough to embed every item
each step, the exact softmax over all items replaces the sampled one (no sampling, so no logQ and
no accidental hits). This is the loss that took SASRec on MovieLens-1M from NDCG@10 0.134 (one
negative, BCE) to 0.182 (Klenitskiy & Vasilev, "Turning Dross Into Gold Loss: is BERT4Rec really
better than SASRec?", RecSys 2023).

BPR (Rendle et al., 2009) is kept as a comparison option.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEG_INF = -1e9


def info_nce(
    u: torch.Tensor,
    v_pos: torch.Tensor,
    pos_ids: torch.Tensor,
    *,
    temperature: float = 0.05,
    log_q: torch.Tensor | None = None,
    v_extra: torch.Tensor | None = None,
    extra_ids: torch.Tensor | None = None,
    extra_log_q: torch.Tensor | None = None,
    v_hard: torch.Tensor | None = None,
    hard_ids: torch.Tensor | None = None,
    row_offset: int = 0,
) -> torch.Tensor:
    """Mean sampled-softmax loss of each row's positive against the negatives.

    u: (B, D) user vectors; v_pos: (C, D) the batch's positive items; pos_ids: (C,) catalog ids.
    Row i's positive is column row_offset + i. C = B and row_offset = 0 in one process; in data
    parallel training (models.retrieval.distributed) the columns are the whole global batch,
    gathered from every rank, and an id < 0 marks a padding column.
    log_q: (C,) log sampling probability of each in-batch item (None: no correction).
    v_extra / extra_ids / extra_log_q: (M, D) / (M,) / (M,) negatives shared by every row.
    v_hard / hard_ids: (B, H, D) / (B, H) per-row hard negatives; id < 0 marks padding.
    """
    B, D = u.shape
    C = v_pos.shape[0]
    assert v_pos.shape == (C, D) and pos_ids.shape == (C,) and 0 <= row_offset <= C - B, (
        u.shape,
        v_pos.shape,
        pos_ids.shape,
        row_offset,
    )
    target = torch.arange(B, device=u.device) + row_offset  # (B,): each row's positive column
    own = pos_ids[row_offset : row_offset + B]  # (B,)
    logits = u @ v_pos.T / temperature  # (B, C); column row_offset + i = row i's positive
    if log_q is not None:
        logits = logits - log_q[None, :]
    # a column whose item is the row's own positive (not its own column) is no negative
    hit = (own[:, None] == pos_ids[None, :]) | (pos_ids[None, :] < 0)  # (B, C)
    hit[torch.arange(B, device=u.device), target] = False
    logits = logits.masked_fill(hit, NEG_INF)
    parts = [logits]
    if v_extra is not None:
        ex = u @ v_extra.T / temperature  # (B, M)
        if extra_log_q is not None:
            ex = ex - extra_log_q[None, :]
        ex = ex.masked_fill(extra_ids[None, :] == own[:, None], NEG_INF)
        parts.append(ex)
    if v_hard is not None:
        hard = torch.einsum("bd,bhd->bh", u, v_hard) / temperature  # (B, H)
        hard = hard.masked_fill((hard_ids < 0) | (hard_ids == own[:, None]), NEG_INF)
        parts.append(hard)
    all_logits = torch.cat(parts, dim=1)  # (B, C + M + H)
    # log-softmax numerator is the positive's entry; the correction also shifts the positive's
    # logit, which is the estimator of Yi et al.
    return F.cross_entropy(all_logits, target)


def full_softmax(u: torch.Tensor, v_items: torch.Tensor, target: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """Mean cross-entropy of each row's target against every catalog item.

    u: (B, D) user vectors; v_items: (N, D) every catalog item's vector; target: (B,) catalog
    positions. Every other item is a negative, the user's other positives included (as SASRec's
    cross-entropy does)."""
    B, D = u.shape
    assert v_items.shape[1] == D and target.shape == (B,), (u.shape, v_items.shape, target.shape)
    logits = u @ v_items.T / temperature  # (B, N)
    return F.cross_entropy(logits, target)


def bpr(u: torch.Tensor, v_pos: torch.Tensor, v_neg: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: -log sigmoid(s_pos - s_neg); (B, D) each."""
    assert u.shape == v_pos.shape == v_neg.shape, (u.shape, v_pos.shape, v_neg.shape)
    return -F.logsigmoid((u * v_pos).sum(-1) - (u * v_neg).sum(-1)).mean()
