"""Masks and corrections of the retrieval losses, on cases small enough to compute by hand."""

from __future__ import annotations

import math

import pytest
import torch

from models.retrieval.losses import bpr, full_softmax, info_nce


def _ce(logits: list[float], target: int) -> float:
    """-log softmax(logits)[target], by hand."""
    return -(logits[target] - math.log(sum(math.exp(x) for x in logits)))


# Two-dimensional unit vectors: u0 = v0 = e0, u1 = v1 = e1, so u_i . v_j = 1 if i == j else 0.
U = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
V = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def test_in_batch_softmax_matches_the_hand_computation():
    # row 0: logits [1, 0] / T; row 1: [0, 1] / T; T = 0.5
    loss = info_nce(U, V, torch.tensor([10, 11]), temperature=0.5)
    expected = (_ce([2.0, 0.0], 0) + _ce([0.0, 2.0], 1)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_accidental_hit_is_not_a_negative():
    # both rows have item 10 as positive: column 1 for row 0 is the same item, so it is masked
    # and each row's softmax holds only its own positive -> loss 0
    loss = info_nce(U, V, torch.tensor([10, 10]), temperature=0.5)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # without masking the same vectors with different ids give a positive loss
    assert info_nce(U, V, torch.tensor([10, 11]), temperature=0.5).item() > 0.1


def test_logq_correction_subtracts_log_sampling_probability():
    log_q = torch.log(torch.tensor([0.5, 0.1]))
    loss = info_nce(U, V, torch.tensor([10, 11]), temperature=1.0, log_q=log_q)
    # logits[i][j] = u_i . v_j - log q_j
    l0 = [1 - math.log(0.5), 0 - math.log(0.1)]
    l1 = [0 - math.log(0.5), 1 - math.log(0.1)]
    assert loss.item() == pytest.approx((_ce(l0, 0) + _ce(l1, 1)) / 2, rel=1e-6)


def test_padded_hard_negatives_change_nothing_and_real_ones_add_to_the_denominator():
    base = info_nce(U, V, torch.tensor([10, 11]), temperature=1.0)
    v_hard = torch.zeros(2, 2, 2)  # (B, H, D)
    padded = info_nce(U, V, torch.tensor([10, 11]), temperature=1.0, v_hard=v_hard, hard_ids=torch.full((2, 2), -1))
    assert padded.item() == pytest.approx(base.item(), rel=1e-6)
    # one real hard negative per row, equal to the user's own direction: logit 1 joins each row
    v_hard = torch.stack([torch.stack([U[0], U[0]]), torch.stack([U[1], U[1]])])
    hard = info_nce(
        U, V, torch.tensor([10, 11]), temperature=1.0, v_hard=v_hard, hard_ids=torch.tensor([[20, -1], [21, -1]])
    )
    assert hard.item() == pytest.approx((_ce([1, 0, 1], 0) + _ce([0, 1, 1], 1)) / 2, rel=1e-6)
    # a hard negative that is the row's own positive is masked, not counted against it
    same = info_nce(
        U, V, torch.tensor([10, 11]), temperature=1.0, v_hard=v_hard, hard_ids=torch.tensor([[10, -1], [11, -1]])
    )
    assert same.item() == pytest.approx(base.item(), rel=1e-6)


def test_shared_extra_negatives_mask_the_rows_own_positive():
    v_extra = torch.tensor([[1.0, 0.0]])  # looks like row 0's positive
    own = info_nce(U, V, torch.tensor([10, 11]), temperature=1.0, v_extra=v_extra, extra_ids=torch.tensor([10]))
    # for row 0 the extra column is its own item (masked); for row 1 it is a real negative (logit 0)
    assert own.item() == pytest.approx((_ce([1, 0], 0) + _ce([0, 1, 0], 1)) / 2, rel=1e-6)


def test_in_batch_extra_and_hard_columns_with_logq_together_match_the_hand_computation():
    # in-batch columns [10, 11] with log q [log .5, log .1]; one shared extra column (item 12, e0,
    # log q log .2); one hard negative per row (e1 for row 0, padding for row 1); T = 0.5
    log_q = torch.log(torch.tensor([0.5, 0.1]))
    loss = info_nce(
        U,
        V,
        torch.tensor([10, 11]),
        temperature=0.5,
        log_q=log_q,
        v_extra=torch.tensor([[1.0, 0.0]]),
        extra_ids=torch.tensor([12]),
        extra_log_q=torch.log(torch.tensor([0.2])),
        v_hard=torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]]),
        hard_ids=torch.tensor([[13], [-1]]),
    )
    lq = [math.log(0.5), math.log(0.1), math.log(0.2)]
    # row 0: u0 = e0 scores [1, 0, 1] / T, minus log q, then the hard column e1 (0, no log q)
    l0 = [2 - lq[0], 0 - lq[1], 2 - lq[2], 0.0]
    # row 1: u1 = e1 scores [0, 1, 0] / T, minus log q; its hard slot is padding
    l1 = [0 - lq[0], 2 - lq[1], 0 - lq[2]]
    # float32 through exp/log on any CPU is a few ulps (~1e-6 relative at worst); a wrong mask or
    # a missing log q moves the loss by more than 1e-2
    assert loss.item() == pytest.approx((_ce(l0, 0) + _ce(l1, 1)) / 2, rel=1e-5)


def test_full_softmax_scores_each_row_against_every_catalog_item():
    # three catalog items e0, e1 and (e0 + e1) / |.|; row 0 targets item 0, row 1 targets item 2
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    loss = full_softmax(U, items, torch.tensor([0, 2]), temperature=0.5)
    expected = (_ce([2.0, 0.0, 1.2], 0) + _ce([0.0, 2.0, 1.6], 2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_bpr_value():
    u, p, n = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert bpr(u, p, n).item() == pytest.approx(-math.log(1 / (1 + math.exp(-1))), rel=1e-6)
