"""Training the ranker: per-action binary cross-entropy plus a listwise loss over each user's
retrieved candidates, early stopping on the valid NDCG@10 of the weighted score (or the valid
listwise loss: `early_stopping`) with action weights chosen on valid at the kept epoch, seeded;
checkpoints as state dicts.

Each step takes `batch_size` users of the train split with their whole candidate list (the
retrieved ones and the label-window exposures retrieval missed). BCE runs over every candidate
(each head is P(action), Phoenix's reading); the listwise term (``listwise_loss``) scores, per
action, each candidate with the action against the user's retrieved candidates without it (a
softmax over the list, the objective of leave-last-out NDCG, where one held-out item competes
with the rest of the list). After each epoch the action weights of the weighted score are
picked on the valid sample from a grid of multiples of the vocabulary's weights (signs kept),
for the figure the promotion check ranking_beats_retrieval_on_valid_ndcg measures (valid
NDCG@10); the kept epoch's model and action weights are kept, and the chosen action weights are
the ones the checkpoint serves with. `early_stopping: listwise` keeps the epoch with the lowest
valid listwise loss instead (measured on MovieLens by benchmarks/ranking_selection.py: README,
ranking section; not the default).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from models.artifacts import atomic_folder
from models.budget import LR_SCHEDULES, WallClock, lr_factor
from models.progress import Progress
from models.ranking.evaluation import order_metrics
from models.ranking.features import FEATURE_FILE, ItemSnapshot
from models.ranking.model import Ranker, RankerConfig, score_candidates, weighted_score
from models.settings import setting


@dataclass
class RankerTrainConfig:
    epochs: int = setting(
        8,
        "The work budget (models/budget.py): epochs of max(min_steps, train users / batch_size) "
        "steps; early stopping on the valid NDCG@10 of the weighted score usually ends sooner.",
        ge=1,
    )
    batch_size: int = setting(32, "Users per step, each with the whole candidate list.")
    min_steps: int = 20  # steps per epoch at least: on small data an epoch passes over the users more than once
    lr: float = setting(3e-3, "AdamW learning rate.")
    lr_schedule: str = setting(
        "constant",
        "constant, or cosine: the learning rate decays to 0 over the work budget (epochs x steps, "
        "after a warm-up of 1% of its steps; models/budget.py lr_factor).",
    )
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    patience: int = setting(3, "Epochs without a better early-stopping figure (early_stopping).")
    early_stopping: str = setting(
        "ndcg",
        "What picks the epoch kept: ndcg (the best valid NDCG@10 of the weighted score, action "
        "weights chosen on valid) or listwise (the lowest valid listwise loss, a figure over every "
        "candidate's score that moves less by chance than NDCG@10 over a few hundred users; the "
        "action weights are then chosen at that epoch).",
    )
    valid_users: int = setting(
        1000,
        "Early stopping scores a seeded sample of this many valid users (0 = all); "
        "ranking_evaluation scores every one.",
    )
    seed: int = setting(0, "Seeds sampling and initialisation.")
    max_minutes: float = setting(
        0.0,
        "Wall-clock training budget, only when asked (0 = none, the default), checked after each "
        "epoch: the model then depends on the machine's load (models/budget.py).",
        ge=0.0,
    )
    max_steps: int | None = None  # tests, smoke runs
    listwise: float = setting(
        1.0,
        "Weight of the listwise loss (softmax over each user's retrieved candidates) next to "
        "per-action BCE; 0 = pointwise BCE only.",
        ge=0,
    )
    listwise_positives: str = setting(
        "next",
        "Positives of the listwise loss: next (the label window's first item, what valid/test "
        "hold out: the objective the promotion check measures) or window (every candidate with "
        "the action in the window).",
    )
    choose_weights: bool = setting(
        True,
        "Pick the weighted score's action weights on valid NDCG@10 (multiples 0, 1, 2 of each "
        "vocabulary weight); False keeps the vocabulary's weights.",
    )

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.early_stopping not in ("ndcg", "listwise"):
            raise ValueError(f"early_stopping must be ndcg or listwise, got {self.early_stopping!r}")
        if self.listwise_positives not in ("window", "next"):
            raise ValueError(f"listwise_positives must be window or next, got {self.listwise_positives!r}")


@dataclass
class RankerTrainResult:
    model: Ranker
    best_epoch: int
    best_valid: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    stopped_by: str = "epochs"
    weights: list[float] = field(default_factory=list)  # the weighted score's action weights (chosen on valid)


WEIGHT_MULTIPLES = (0.0, 1.0, 2.0)  # the grid choose_weights searches, per action


def listwise_loss(logits: torch.Tensor, positives: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per (user, action): each positive candidate against the user's valid candidates without
    the action, -log softmax over {itself} + those negatives, averaged over the positives; then
    averaged over (user, action) pairs with at least one positive and one negative.
    logits (B, C, A), positives (B, C, A) bool, valid (B, C) bool -> a scalar."""
    assert logits.shape == positives.shape and valid.shape == logits.shape[:2], (logits.shape, valid.shape)
    pos = positives & valid[..., None]  # (B, C, A)
    neg = ~positives & valid[..., None]
    neg_lse = torch.logsumexp(logits.masked_fill(~neg, -torch.inf), dim=1)  # (B, A)
    # -log(e^l / (e^l + e^neg_lse)) = softplus(neg_lse - l)
    per = torch.where(pos, F.softplus(neg_lse[:, None, :] - logits), 0.0)  # (B, C, A)
    n_pos = pos.sum(1)  # (B, A)
    has = (n_pos > 0) & neg.any(1)  # (B, A)
    per_pair = per.sum(1) / n_pos.clamp(min=1)  # (B, A)
    return torch.where(has, per_pair, 0.0).sum() / has.sum().clamp(min=1)


def valid_probs(model: Ranker, vs) -> torch.Tensor:
    return score_candidates(
        model,
        vs.user_hash,
        vs.history.item_hash,
        vs.history.actions,
        vs.history.valid,
        vs.cand_hash,
        vs.retrieval_score,
        vs.features,
    )


def valid_listwise(probs: torch.Tensor, vs) -> float:
    """The listwise next-item loss training minimises (``listwise_loss``), on the valid sample:
    set beside the train loss by epoch it tells under- from over-fitting (the heads' logits
    read back from the probabilities in float64). probs (G, C, A) -> a float."""
    logits = torch.logit(probs.double(), eps=1e-12)  # (G, C, A)
    positives = (vs.labels > 0) & vs.is_target[..., None]  # (G, C, A)
    return float(listwise_loss(logits, positives, vs.cand_valid & vs.retrieved))


def choose_weights(probs: torch.Tensor, vs, base: torch.Tensor, search: bool = True) -> tuple[torch.Tensor, dict]:
    """The action weights (multiples WEIGHT_MULTIPLES of `base`, signs kept, not all zero) whose
    weighted score gives the best NDCG@10 over vs's retrieved lists; ties keep the earliest in
    grid order, which starts at `base` itself. probs (G, C, A) -> (weights (A,), metrics)."""
    valid = vs.cand_valid & vs.retrieved
    grid = [base]
    if search:
        grid += [
            base * torch.tensor(m, dtype=base.dtype)
            for m in itertools.product(WEIGHT_MULTIPLES, repeat=len(base))
            if any(m) and any(x != 1.0 for x in m)
        ]
    best_w, best = base, None
    for w in grid:
        m = order_metrics(weighted_score(probs, w), vs.is_target, valid)
        if best is None or m["ndcg@10"] > best["ndcg@10"]:
            best_w, best = w, m
    return best_w, best


def _batch(rs, rows: torch.Tensor) -> dict:
    """The whole candidate lists of `rows`, cut to the longest one among them."""
    C = int(rs.cand_valid[rows].sum(1).max())
    h = rs.history
    return {
        "user_hash": rs.user_hash[rows],
        "hist": (h.item_hash[rows], h.actions[rows], h.valid[rows]),
        "cand": rs.cand_hash[rows, :C],
        "score": torch.where(torch.isfinite(rs.retrieval_score[rows, :C]), rs.retrieval_score[rows, :C], 0.0),
        "feat": None if rs.features is None else rs.features[rows, :C],
        "labels": rs.labels[rows, :C],
        "valid": rs.cand_valid[rows, :C],
        "retrieved": rs.cand_valid[rows, :C] & rs.retrieved[rows, :C],
        "target": rs.is_target[rows, :C],
    }


def train_ranker(
    train_set,
    valid_set,
    cfg: RankerConfig,
    tcfg: RankerTrainConfig,
    weights: torch.Tensor,
    log=None,
    on_epoch=None,
) -> RankerTrainResult:
    """`on_epoch(epoch, model, valid_probs)`, when given, sees the model after each epoch's
    validation (epoch 0: before training), in eval mode: benchmarks/ranking_selection.py scores
    every epoch with it; it must not train the model."""
    torch.manual_seed(tcfg.seed)
    gen = torch.Generator().manual_seed(tcfg.seed)
    valid_set = valid_set.sample(tcfg.valid_users, tcfg.seed)
    model = Ranker(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    G = len(train_set)
    steps_per_epoch = max(tcfg.min_steps, math.ceil(G / tcfg.batch_size))
    # epoch 0: the untrained ranker, which orders as the retriever does; training must beat it
    if train_set.features is not None:
        model.set_feature_scale(train_set.features, train_set.cand_valid)
    probs = valid_probs(model, valid_set)
    if on_epoch:
        on_epoch(0, model, probs)
    start_w, start = choose_weights(probs, valid_set, weights, search=False)
    start_loss = valid_listwise(probs, valid_set)
    # the early-stopping figure, higher is better: valid NDCG@10 or minus the valid listwise loss
    by_loss = tcfg.early_stopping == "listwise"
    best = -start_loss if by_loss else start["ndcg@10"]
    best_epoch, bad, best_valid, best_weights = 0, 0, start, start_w
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    history = [
        {
            "epoch": 0,
            "loss": float("nan"),
            "valid_listwise": start_loss,
            "valid_ndcg@10": start["ndcg@10"],
            "valid_hr@10": start["hr@10"],
            "train_seconds": 0.0,
        }
    ]
    if log:
        log(f"ranker before training (retrieval order): valid NDCG@10 {start['ndcg@10']:.4f}")
    clock, steps, stopped_by = WallClock(tcfg.max_minutes), 0, "epochs"
    for epoch in range(1, tcfg.epochs + 1):
        model.train()
        passes = math.ceil(steps_per_epoch * tcfg.batch_size / G)
        order = torch.cat([torch.randperm(G, generator=gen) for _ in range(passes)])
        progress = Progress(f"ranker epoch {epoch}", steps_per_epoch, "steps", log)
        total, n, e0 = 0.0, 0, time.perf_counter()
        for step in range(steps_per_epoch):
            rows = order[step * tcfg.batch_size : (step + 1) * tcfg.batch_size]
            b = _batch(train_set, rows)
            logits = model(b["user_hash"], *b["hist"], b["cand"], b["score"], b["feat"])  # (b, C, A)
            ok = b["valid"]
            loss = (
                F.binary_cross_entropy_with_logits(logits, b["labels"], reduction="none").mean(-1) * ok
            ).sum() / ok.sum().clamp(min=1)
            if tcfg.listwise:
                positives = b["labels"] > 0  # (b, C, A)
                if tcfg.listwise_positives == "next":
                    positives = positives & b["target"][..., None]
                loss = loss + tcfg.listwise * listwise_loss(logits, positives, b["retrieved"])
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"ranker loss is {loss.item()} at epoch {epoch}, step {steps}: lower the learning rate"
                )
            for g in opt.param_groups:
                g["lr"] = tcfg.lr * lr_factor(tcfg.lr_schedule, steps, tcfg.epochs * steps_per_epoch)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip_norm)
            opt.step()
            total, n, steps = total + loss.item(), n + 1, steps + 1
            progress.update(1)
            if tcfg.max_steps is not None and steps >= tcfg.max_steps:
                stopped_by = "max_steps"
                break
        train_seconds = time.perf_counter() - e0
        probs = valid_probs(model, valid_set)
        if on_epoch:
            on_epoch(epoch, model, probs)
        chosen, metrics = choose_weights(probs, valid_set, weights, tcfg.choose_weights)
        loss_v = valid_listwise(probs, valid_set)
        history.append(
            {
                "epoch": epoch,
                "loss": total / max(n, 1),
                "valid_listwise": loss_v,
                "valid_ndcg@10": metrics["ndcg@10"],
                "valid_hr@10": metrics["hr@10"],
                "train_seconds": train_seconds,
            }
        )
        if log:
            log(
                f"ranker epoch {epoch}: loss {total / max(n, 1):.4f}, valid NDCG@10 {metrics['ndcg@10']:.4f}, "
                f"HR@10 {metrics['hr@10']:.4f} ({train_seconds:.1f} s)"
            )
        figure = -loss_v if by_loss else metrics["ndcg@10"]
        if figure > best:
            best, best_epoch, bad = figure, epoch, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
            best_valid, best_weights = metrics, chosen
        else:
            bad += 1
        if stopped_by == "max_steps":
            break
        if bad >= tcfg.patience:
            stopped_by = "patience"
            break
        if clock.spent():
            stopped_by = "max_minutes"
            break
    model.load_state_dict(best_state)
    model.eval()
    return RankerTrainResult(model, best_epoch, best_valid, history, stopped_by, best_weights.tolist())


def save_ranker(
    root: Path, model: Ranker, meta: dict, version: str | None = None, snapshot: ItemSnapshot | None = None
) -> Path:
    """artifacts/ranking/<version>/ranker.pt (state dict) + config.json (+ the item snapshot the
    features are served from, item_features.npz, for a ranker with features), written atomically."""
    if model.cfg.n_features and snapshot is None:
        raise ValueError("this ranker reads candidate features: pass the item snapshot it serves with")
    version = version or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    with atomic_folder(root, version) as tmp:
        torch.save({"model": model.state_dict()}, tmp / "ranker.pt")
        if snapshot is not None:
            snapshot.save(tmp / FEATURE_FILE)
        meta = {
            "version": version,
            "ranker": model.cfg.to_dict(),
            "created_at": datetime.now(timezone.utc).isoformat(),
            **meta,
        }
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return root / version


def train_config_dict(tcfg: RankerTrainConfig) -> dict:
    return asdict(tcfg)
