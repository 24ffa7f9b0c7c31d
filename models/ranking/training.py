"""Training the ranker: per-action binary cross-entropy on candidate blocks, early stopping on
the valid NDCG@10 of the weighted score, seeded; checkpoints as state dicts.

Each step takes `batch_size` users of the train split and draws cfg.candidates_per_pass of each
user's candidates: candidates with an action in the label window first (at most half the
block), then retrieved-but-not-engaged ones and exposures without an action at random.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from models.artifacts import atomic_folder
from models.progress import Progress
from models.ranking.evaluation import order_metrics
from models.ranking.model import Ranker, RankerConfig, score_candidates, weighted_score
from models.settings import setting


@dataclass
class RankerTrainConfig:
    epochs: int = setting(
        8, "Upper bound; early stopping on the valid NDCG@10 of the weighted score usually ends sooner."
    )
    batch_size: int = setting(32, "Users per step, each with one block of candidates_per_pass candidates.")
    min_steps: int = 20  # steps per epoch at least: on small data an epoch passes over the users
    # several times, each pass drawing other candidates of theirs (a block holds 32 of ~200)
    lr: float = setting(3e-3, "AdamW learning rate.")
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    patience: int = setting(3, "Epochs without a better valid NDCG@10.")
    valid_users: int = setting(
        1000,
        "Early stopping scores a seeded sample of this many valid users (0 = all); "
        "ranking_evaluation scores every one.",
    )
    seed: int = setting(0, "Seeds sampling and initialisation.")
    max_minutes: float = setting(0.0, "Training budget (0 = none).")
    max_steps: int | None = None  # tests, smoke runs


@dataclass
class RankerTrainResult:
    model: Ranker
    best_epoch: int
    best_valid: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    stopped_by: str = "epochs"


def sample_block(rs, rows: torch.Tensor, P: int, gen: torch.Generator) -> torch.Tensor:
    """(b, P) candidate slots for `rows`: labelled first (at most P // 2), the rest at random."""
    valid = rs.cand_valid[rows]  # (b, C)
    labelled = (rs.labels[rows].sum(-1) > 0) & valid  # (b, C)
    n_lab = labelled.sum(1, keepdim=True).clamp(min=1)  # (b, 1)
    keep_lab = torch.rand(valid.shape, generator=gen) < (P // 2) / n_lab  # cap labelled at ~P/2 on average
    key = torch.rand(valid.shape, generator=gen) + 2.0 * (labelled & keep_lab) - 4.0 * ~valid
    C = valid.shape[1]
    if C < P:  # fewer candidates than slots: every one, the rest padding (index C = a padding column)
        return torch.cat([torch.argsort(key, dim=1, descending=True), torch.full((len(rows), P - C), C)], dim=1)
    return torch.topk(key, P, dim=1).indices


def _gather(x: torch.Tensor, idx: torch.Tensor, fill) -> torch.Tensor:
    """x (b, C, ...) gathered at idx (b, P); idx == C gives `fill`."""
    pad = torch.full((x.shape[0], 1, *x.shape[2:]), fill, dtype=x.dtype)
    xp = torch.cat([x, pad], dim=1)
    return xp[torch.arange(len(idx))[:, None], idx]


def valid_ndcg(model: Ranker, vs, weights: torch.Tensor) -> dict:
    probs = score_candidates(
        model,
        vs.user_hash,
        vs.history.item_hash,
        vs.history.actions,
        vs.history.valid,
        vs.cand_hash,
        vs.retrieval_score,
    )
    return order_metrics(weighted_score(probs, weights), vs.is_target, vs.cand_valid & vs.retrieved)


def train_ranker(
    train_set, valid_set, cfg: RankerConfig, tcfg: RankerTrainConfig, weights: torch.Tensor, log=None
) -> RankerTrainResult:
    torch.manual_seed(tcfg.seed)
    gen = torch.Generator().manual_seed(tcfg.seed)
    valid_set = valid_set.sample(tcfg.valid_users, tcfg.seed)
    model = Ranker(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    P = cfg.candidates_per_pass
    G = len(train_set)
    steps_per_epoch = max(tcfg.min_steps, math.ceil(G / tcfg.batch_size))
    # epoch 0: the untrained ranker, which orders as the retriever does; training must beat it
    start = valid_ndcg(model, valid_set, weights)
    best, best_epoch, bad, best_valid = start["ndcg@10"], 0, 0, start
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    history = [
        {
            "epoch": 0,
            "loss": float("nan"),
            "valid_ndcg@10": start["ndcg@10"],
            "valid_hr@10": start["hr@10"],
            "train_seconds": 0.0,
        }
    ]
    if log:
        log(f"ranker before training (retrieval order): valid NDCG@10 {start['ndcg@10']:.4f}")
    t0, steps, stopped_by = time.perf_counter(), 0, "epochs"
    for epoch in range(1, tcfg.epochs + 1):
        model.train()
        passes = math.ceil(steps_per_epoch * tcfg.batch_size / G)
        order = torch.cat([torch.randperm(G, generator=gen) for _ in range(passes)])
        progress = Progress(f"ranker epoch {epoch}", steps_per_epoch, "steps", log)
        total, n, e0 = 0.0, 0, time.perf_counter()
        for step in range(steps_per_epoch):
            rows = order[step * tcfg.batch_size : (step + 1) * tcfg.batch_size]
            idx = sample_block(train_set, rows, P, gen)  # (b, P)
            cand = _gather(train_set.cand_hash[rows], idx, 0)  # (b, P, n_hashes)
            labels = _gather(train_set.labels[rows], idx, 0.0)  # (b, P, A)
            ok = _gather(train_set.cand_valid[rows], idx, False)  # (b, P)
            rscore = _gather(train_set.retrieval_score[rows], idx, 0.0)  # (b, P)
            h = train_set.history
            logits = model(train_set.user_hash[rows], h.item_hash[rows], h.actions[rows], h.valid[rows], cand, rscore)
            loss = (
                F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(-1) * ok
            ).sum() / ok.sum().clamp(min=1)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"ranker loss is {loss.item()} at epoch {epoch}, step {steps}: lower the learning rate"
                )
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
        metrics = valid_ndcg(model, valid_set, weights)
        history.append(
            {
                "epoch": epoch,
                "loss": total / max(n, 1),
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
        if metrics["ndcg@10"] > best:
            best, best_epoch, bad = metrics["ndcg@10"], epoch, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
            best_valid = metrics
        else:
            bad += 1
        if stopped_by == "max_steps":
            break
        if bad >= tcfg.patience:
            stopped_by = "patience"
            break
        if tcfg.max_minutes and time.perf_counter() - t0 > 60 * tcfg.max_minutes:
            stopped_by = "max_minutes"
            break
    model.load_state_dict(best_state)
    model.eval()
    return RankerTrainResult(model, best_epoch, best_valid, history, stopped_by)


def save_ranker(root: Path, model: Ranker, meta: dict, version: str | None = None) -> Path:
    """artifacts/ranking/<version>/ranker.pt (state dict) + config.json, written atomically."""
    version = version or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    with atomic_folder(root, version) as tmp:
        torch.save({"model": model.state_dict()}, tmp / "ranker.pt")
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
