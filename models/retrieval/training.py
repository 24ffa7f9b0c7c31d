"""Training: tensorised batches, AdamW (+ SparseAdam for the id tables, models.retrieval.optim), clipping, early stopping
on validation NDCG@10, seeded. A non-finite loss raises `TrainingDiverged`; nothing is kept."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from models.averaging import check_ema_decay, moving_average
from models.budget import WallClock, examples_budget
from models.progress import Progress
from models.settings import setting
from models.retrieval.data import Catalog, EvalSet, TrainSet
from models.retrieval.evaluation import evaluate_model
from models.retrieval.losses import bpr, full_softmax, info_nce
from models.retrieval.optim import RowSparseAdam
from models.retrieval.towers import TowerConfig, TwoTower

LOSSES = ("infonce", "bpr")
REFITS = ("off", "continue", "retrain")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the run stops and no checkpoint is promoted."""


@dataclass
class TrainConfig:
    loss: str = setting(
        "infonce",
        "infonce (softmax: over the whole catalog up to full_catalog_items, sampled beyond) or bpr (comparison).",
    )
    full_catalog_items: int = setting(
        0,
        "infonce: catalogs up to this many items train with cross-entropy over every item (each "
        "step embeds the whole catalog, every item a negative, no sampling and so no logQ); larger "
        "ones use in-batch + extra uniform + hard negatives with logQ. 0 = always sampled, the "
        "default until the full loss is shown better: on MovieLens (9k items, mean encoder, seed 0) "
        "it learned slower for 4 epochs, then matched sampled's best (valid NDCG@10 0.082 against "
        "0.080, test 0.059 against 0.054: one seed, inside chance) at 2.3x the step cost; 10x at "
        "50k items (README).",
        ge=0,
    )
    temperature: float = setting(0.05, "Softmax temperature over cosine scores.")
    logq_correction: bool = setting(
        True, "Correct in-batch negatives for popularity (subtract log q_j: popular items are not over-penalised)."
    )
    extra_negatives: int = setting(
        512,
        "Uniform negatives shared by the batch (mixed "
        "negatives; Phoenix uses 64, 512 scored better on MovieLens full ranking).",
    )
    hard_negatives: bool = setting(True, "The user's negative feedback as hard negatives.")
    batch_size: int = setting(256, "Training rows per step.")
    epochs: int = setting(
        30,
        "Passes over the training rows at most (the work budget's ceiling, models/budget.py); early "
        "stopping on valid NDCG@10 usually ends sooner.",
        ge=1,
    )
    lr: float = setting(3e-3, "AdamW / SparseAdam learning rate.")
    ema_decay: float = setting(
        0.999,
        "Validate, keep and serve an exponential moving average of the weights (torch's "
        "AveragedModel), updated after every step with decay min(ema_decay, (1 + t) / (10 + t)) "
        "at step t (TensorFlow ExponentialMovingAverage's num_updates rule: early in a run the "
        "average spans about the last tenth of the steps, later at most ~1 / (1 - ema_decay) "
        "steps, so a short run never averages in its first weights); 0 = the trained weights. "
        "MovieLens, 3 seeds: test NDCG@10 0.0697 -> 0.0763, higher on every seed; the demo data "
        "0.177 -> 0.187 (README).",
        ge=0.0,
        lt=1.0,
    )
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    patience: int = setting(
        3,
        "Validation checks in a row without a better valid NDCG@10 before stopping: epochs on "
        "data smaller than valid_every, patience x valid_every examples on larger data.",
        ge=1,
    )
    max_positions: int = 4096  # transformer: positions per step in the (P, P) softmax
    window_stride: int = setting(
        10,
        "transformer: rows between training windows (overlapping windows give more steps per "
        "epoch; 0 = history_len, no overlap).",
    )
    seed: int = setting(0, "Seeds torch and NumPy: the same data and seed give the same model.")
    valid_users: int = setting(
        5_000,
        "Early stopping ranks the whole catalog for a seeded "
        "sample of this many validation users (0 = all): at 1M items ranking all ~100k took "
        "20+ minutes a check; model_evaluation still ranks every evaluation user.",
    )
    valid_every: int = setting(
        1_000_000,
        "Training examples between validation checks (0 = once per epoch); patience counts "
        "checks. Data smaller than this validates once per epoch; at 10M events an epoch is 2.6M "
        "examples, too coarse to stop on, and the 10M-example budget holds 10 checks.",
        ge=0,
    )
    max_examples: int = setting(
        10_000_000,
        "Work budget in training examples, raised to min_epochs passes and lowered to epochs "
        "passes over the training rows (models/budget.py; 0 = epochs passes): small data ends by "
        "early stopping, 10M events (2.6M rows) get 3.8 passes.",
        ge=0,
    )
    min_epochs: float = setting(
        3.0,
        "Passes the work budget always allows, however large the data: the budget grows with it.",
        ge=0.0,
    )
    max_minutes: float = setting(
        0.0,
        "Wall-clock training budget, only when asked (0 = none, the default): it keeps the best "
        "weights so far, but the model then depends on the machine's load (a busy machine "
        "stopped MovieLens at epoch 2 of 8; models/budget.py). The work budget bounds a run.",
        ge=0.0,
    )
    max_steps: int | None = None  # stop early (tests, smoke runs)
    content_alignment: float = setting(
        0.1,
        "Weight of a loss pulling each trained item's content-only vector (id part zero) toward "
        "its full vector: an item id never trained is embedded by content alone, and this puts it "
        "near the trained items with the same content (0 = off; benchmarks/bench_cold_items.py). "
        "Demo data: copies under new ids find their source in the top 10 for 92-95% (0: 65%) at "
        "1-4% of NDCG@10 (README).",
        ge=0.0,
    )

    refit: str = setting(
        "off",
        "After early stopping on valid, train on train + valid before test (what the sequential "
        "papers and the benchmark's peers do; `refit`): 'continue' takes the best check's weights "
        "and optimizer state refit_epochs more passes over the train + valid rows at lr, 'retrain' "
        "trains a fresh model on them for the best check's passes, 'off' keeps the best check. "
        "The valid pairs are then trained on: valid figures are the model's before the refit. "
        "Off by default: on MovieLens neither refit lifted test NDCG@10 over 3 seeds (README, "
        "'Refit on train + valid before test').",
    )
    refit_epochs: int = setting(1, "refit='continue': passes over the train + valid rows.", ge=1)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.refit not in REFITS:
            raise ValueError(f"refit must be one of {REFITS}, got {self.refit!r}")
        check_ema_decay(self.ema_decay)

    @property
    def valid_sample(self) -> tuple[int, int]:
        """(n, seed) of the validation users early stopping ranks, the one place that decides
        them: train() samples its valid set with it (EvalSet.sample), and a loader given it
        (load_for_tower(sample=...): the asset's one process and every data-parallel rank) builds
        only those users' sets, which train()'s sample then keeps as they are."""
        return self.valid_users, self.seed


def full_catalog(cfg: TrainConfig, n_items: int) -> bool:
    """The one rule: infonce over the whole catalog when it has at most `full_catalog_items`
    items, sampled negatives with logQ beyond."""
    return cfg.loss == "infonce" and n_items <= cfg.full_catalog_items


@dataclass
class TrainResult:
    model: TwoTower
    best_epoch: int
    best_valid: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)  # one dict per epoch
    steps: int = 0
    seconds: float = 0.0
    examples: int = 0
    stopped_by: str = ""  # early_stopping | max_epochs | max_examples | time_budget | max_steps
    epochs: float = 0.0  # passes over the training rows (fractional when stopped inside an epoch)
    best_optimizer_states: list | None = None  # the optimizers at the best check (kept for refit='continue')


def _log_q(train: TrainSet, n_items: int, batch: int, extra: int) -> torch.Tensor:
    """log q_j of the candidate mixture: batch rows drawn by popularity, `extra` uniform."""
    p = (train.item_counts.double() + 1.0) / (train.item_counts.sum().double() + n_items)
    q = (batch * p + extra / n_items) / (batch + extra)
    return q.log().float()


def make_optimizers(model: TwoTower, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    opts = [torch.optim.AdamW(model.dense_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)]
    if model.sparse_parameters():
        opts.append(RowSparseAdam(model.sparse_parameters(), lr=cfg.lr))
    return opts


def optimizer_step(model: TwoTower, opts: list[torch.optim.Optimizer], loss: torch.Tensor, clip_norm: float) -> None:
    """Backward, clip the dense gradients (sparse id-table gradients are not clipped), step."""
    for o in opts:
        o.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.dense_parameters(), clip_norm, foreach=True)
    for o in opts:
        o.step()


def content_alignment_loss(
    model: TwoTower,
    feats: dict[str, torch.Tensor],
    ids: torch.Tensor,
    v_all: torch.Tensor,
    all_ids: torch.Tensor,
    offset: int,
    temperature: float,
    v_content: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax from the content-only vector (id part zero) of each batch item with a
    trained id to its own full vector, against the other full vectors of the batch.

    feats, ids: this process's P positives; v_all, all_ids: the full vectors and ids of the
    whole batch (C >= P rows: every rank's under data parallel, ids -1 = padding), this
    process's rows starting at `offset`. The full vectors are fixed targets (detached), so only
    the content path learns from it. A never-trained item is embedded by content alone; this
    puts it next to the trained item with the same content, not merely in its neighbourhood (a
    cosine pull toward the full vector moved the cosines but not the neighbours). `v_content`:
    the (P, D) content-only vectors of all P positives when the step has encoded them already."""
    has_id = (feats["id_hash"] > 0).any(-1)  # (P,)
    if not has_id.any():
        return v_all.new_zeros(())
    rows = torch.nonzero(has_id).flatten()  # (P',)
    if v_content is None:
        v_content = model.item({k: v[rows] for k, v in feats.items()}, with_id=False)  # (P', D)
    else:
        v_content = v_content[rows]  # (P', D)
    logits = v_content @ v_all.detach().T / temperature  # (P', C)
    labels = rows + offset  # (P',): each row's own full vector
    # neither padding nor the same item at another batch position is a negative
    drop = (ids[rows, None] == all_ids[None, :]) | (all_ids[None, :] < 0)  # (P', C)
    drop[torch.arange(len(rows), device=rows.device), labels] = False
    return F.cross_entropy(logits.masked_fill(drop, float("-inf")), labels)


def _sampled_items(
    model: TwoTower,
    catalog: Catalog,
    pos: torch.Tensor,
    hard_ids: torch.Tensor | None,
    cfg: TrainConfig,
    log_q: torch.Tensor,
    gen: torch.Generator,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None, dict]:
    """One item-tower pass over every item a sampled-softmax step encodes: the P positives, the
    M shared uniform negatives, the real hard negatives and, for the content alignment, the
    positives again by content alone (id part zero). One pass instead of four: at 1M items the
    tower's fixed cost per call (some 20 small ops forward and back) outweighed its arithmetic.

    Only the real hard-negative slots are encoded: info_nce masks the padding (-1), and most
    slots are padding (2.7% real at 1M items, where encoding every slot made the B x H hard
    negatives 70% of the tower's rows). Returns the positives' features (P, ...), v_pos (P, D),
    the content-only vectors (P, D) or None, and info_nce's negative arguments."""
    P, M = len(pos), cfg.extra_negatives
    ids = torch.randint(0, len(catalog), (M,), generator=gen) if M else pos.new_empty(0)  # (M,)
    real = hard_ids >= 0 if hard_ids is not None else None  # (B, H)
    hard = hard_ids[real] if real is not None else pos.new_empty(0)  # (R,)
    A = P if cfg.content_alignment else 0
    together = torch.cat([pos, ids, hard, pos[:A]])  # (P + M + R + A,)
    feats = catalog.features(together)
    with_id = torch.arange(len(together)) < P + M + len(hard)  # the last A rows: content alone
    v_pos, v_extra, v_hard, v_content = model.item(feats, with_id=with_id).split([P, M, len(hard), A])
    extra = {}
    if M:
        extra = {"v_extra": v_extra, "extra_ids": ids, "extra_log_q": log_q[ids] if cfg.logq_correction else None}
    if len(hard):
        # (B, H, D), zero at padding
        v_hard = v_hard.new_zeros(*hard_ids.shape, v_hard.shape[-1]).index_put((real,), v_hard)
        extra.update(v_hard=v_hard, hard_ids=hard_ids)
    return {k: t[:P] for k, t in feats.items()}, v_pos, (v_content if A else None), extra


def train_step(
    model: TwoTower,
    catalog: Catalog,
    train: TrainSet,
    rows: torch.Tensor,
    cfg: TrainConfig,
    log_q: torch.Tensor,
    gen: torch.Generator,
    share: Callable | None = None,
) -> torch.Tensor:
    """Loss for one batch of train rows (indices into `train`): softmax over the whole catalog
    when `full_catalog` says so, else over in-batch + extra + hard negatives with logQ. `share`
    (data parallel, see models.retrieval.distributed) maps this rank's positives (v_pos, pos) to
    the whole global batch's and the offset of this rank's rows in it, so in-batch negatives
    span every rank."""
    tc = model.cfg
    user = train.user[rows]
    uh = train.user_hash[user]  # (B, n_hashes)
    if tc.encoder == "transformer":
        # every position of the window predicts its next item
        hist = train.history[rows]  # (B, L)
        nxt = torch.cat([hist[:, 1:], train.target[rows, None]], dim=1)  # (B, L)
        valid = (hist >= 0) & (nxt >= 0)
        u_all = model.users(catalog, uh, hist, all_positions=True)  # (B, L, D)
        u = u_all[valid]  # (P, D)
        pos = nxt[valid]  # (P,)
        hard_ids = train.hard[user[:, None].expand_as(hist)[valid]] if cfg.hard_negatives else None  # (P, H)
        cap = cfg.max_positions
        if len(pos) > cap:  # bound the (P, P) or (P, N) logits
            keep = torch.randperm(len(pos), generator=gen)[:cap]
            u, pos = u[keep], pos[keep]
            hard_ids = hard_ids[keep] if hard_ids is not None else None
    else:
        hist = train.history[rows]
        u = model.users(catalog, uh, hist)  # (B, D)
        pos = train.target[rows]
        hard_ids = train.hard[user] if cfg.hard_negatives else None
    local_pos, v_content, extra = pos, None, {}
    if full_catalog(cfg, len(catalog)):
        feats = catalog.features(pos)
        v_items = model.item(catalog.features(torch.arange(len(catalog))))  # (N, D): one id-dropout draw for all
        v_pos = v_items[pos]  # (P, D)
    elif cfg.loss == "bpr":
        feats = catalog.features(pos)
        v_pos = model.item(feats)  # (P, D)
    else:
        feats, v_pos, v_content, extra = _sampled_items(model, catalog, pos, hard_ids, cfg, log_q, gen)

    def align(v_all: torch.Tensor, all_ids: torch.Tensor, offset: int) -> torch.Tensor | float:
        """The weighted content-alignment loss of this process's positives against the batch's."""
        if not cfg.content_alignment:
            return 0.0
        return cfg.content_alignment * content_alignment_loss(
            model, feats, local_pos, v_all, all_ids, offset, cfg.temperature, v_content
        )

    if cfg.loss == "bpr":
        neg = torch.randint(0, len(catalog), pos.shape, generator=gen)
        return bpr(u, v_pos, model.item(catalog.features(neg))) + align(v_pos, pos, 0)
    if full_catalog(cfg, len(catalog)):
        # every item is a negative, the hard ones included; under data parallel each rank scores
        # its own rows against the whole catalog, and only the content alignment (and this rank's
        # weight) spans the global batch, as in one process
        loss = full_softmax(u, v_items, pos, temperature=cfg.temperature)
        offset = 0
        if share is not None:
            v_pos, pos, offset = share(v_pos, pos)  # (C, D), (C,)
        return loss + align(v_pos, pos, offset)
    offset = 0
    if share is not None:
        v_pos, pos, offset = share(v_pos, pos)  # (C, D), (C,): padding ids are -1, masked in info_nce
    aligned = align(v_pos, pos, offset)
    return (
        info_nce(
            u,
            v_pos,
            pos,
            temperature=cfg.temperature,
            log_q=log_q[pos] if cfg.logq_correction else None,
            row_offset=offset,
            **extra,
        )
        + aligned
    )


def train(
    catalog: Catalog,
    train_set: TrainSet,
    tower: TowerConfig,
    cfg: TrainConfig,
    *,
    valid: EvalSet | None = None,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[int, dict], None] | None = None,
    init_state: dict | None = None,
    parallel=None,
    keep_last: bool = False,
) -> TrainResult:
    """Train a TwoTower; keeps the weights of the best validation NDCG@10 epoch (without `valid`,
    of the lowest training loss; `keep_last`: the last weights). `parallel`
    (models.retrieval.distributed.DataParallel) trains one rank of a torchrun process group."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = TwoTower(tower)
    opts = make_optimizers(model, cfg)
    if init_state is not None:  # resume
        model.load_state_dict(init_state["model"])
        for o, s in zip(opts, init_state.get("optimizers", [])):
            o.load_state_dict(s)
    rows_all = (
        train_set.windows(cfg.window_stride or tower.history_len)
        if tower.encoder == "transformer"
        else torch.arange(len(train_set))
    )
    if len(rows_all) == 0:
        raise ValueError("no training rows: the train split is empty")
    log_q = _log_q(train_set, len(catalog), cfg.batch_size, cfg.extra_negatives)
    # data parallel: this rank's share of each global batch, validation sharded over the ranks and
    # a wall-clock budget (when asked) on rank 0's clock, so that every rank takes the same decisions
    if parallel is not None:
        step, evaluate, agree = (
            parallel.wrap(model, catalog, train_set, cfg, log_q, gen),
            parallel.evaluate,
            parallel.agree,
        )
    else:
        step, evaluate, agree = (
            lambda rows: train_step(model, catalog, train_set, rows, cfg, log_q, gen),
            evaluate_model,
            bool,
        )
    if valid is not None and len(valid):
        valid = valid.sample(*cfg.valid_sample)  # a no-op on a set loaded with the same sample
        log(f"early stopping on validation NDCG@10 over {len(valid):,} users x {len(catalog):,} items")
    n_rows = len(rows_all)
    every = cfg.valid_every or n_rows  # examples between validations (and early-stopping checks)
    budget = examples_budget(n_rows, epochs=cfg.epochs, max_examples=cfg.max_examples, min_epochs=cfg.min_epochs)
    budget_rule = "max_epochs" if budget == cfg.epochs * n_rows else "max_examples"
    log(
        f"work budget: {budget:,} examples ({budget / n_rows:.3g} passes over {n_rows:,} rows; {budget_rule})"
        + (f", and {cfg.max_minutes:g} minutes of wall clock" if cfg.max_minutes else "")
    )
    result = TrainResult(model, best_epoch=-1)
    best_score, best_state, bad_checks = -math.inf, None, 0
    # the weights judged at each check and kept: the average's when asked, else the trained ones
    averaged, average_every = moving_average(model, cfg.ema_decay, use_buffers=True)
    judged = averaged.module if averaged is not None else model
    t0 = time.perf_counter()
    clock = WallClock(cfg.max_minutes)
    period = {"losses": [], "examples": 0, "t": time.perf_counter()}

    def check(epoch_float: float) -> bool:
        """Close a validation period: record it, keep the best weights; True = stop early."""
        nonlocal best_score, best_state, bad_checks
        row = {
            "check": len(result.history),
            "epoch": round(epoch_float, 3),
            "examples": result.examples,
            "loss": float(np.mean(period["losses"])) if period["losses"] else float("nan"),
            "train_seconds": time.perf_counter() - period["t"],
        }
        if valid is not None and len(valid):
            te = time.perf_counter()
            ev = evaluate(judged, catalog, valid, ks=(10,), coverage=False, log=log)
            row.update({f"valid_{k}": v for k, v in ev.items() if k != "users"})
            row["eval_seconds"] = time.perf_counter() - te
            model.train()
        result.history.append(row)
        score = row.get("valid_ndcg@10", -row["loss"])
        log(
            f"epoch {row['epoch']:g}: loss {row['loss']:.4f}"
            + (f", valid NDCG@10 {row['valid_ndcg@10']:.4f}" if "valid_ndcg@10" in row else "")
            + f" ({row['train_seconds']:.1f}s training"
            + (f", {row['eval_seconds']:.1f}s validation)" if "eval_seconds" in row else ")")
        )
        if on_epoch:
            on_epoch(row["check"], row)
        period.update(losses=[], examples=0, t=time.perf_counter())
        if score > best_score or keep_last:
            best_score, bad_checks = score, 0
            best_state = copy.deepcopy(judged.state_dict())
            if cfg.refit == "continue":
                result.best_optimizer_states = copy.deepcopy([o.state_dict() for o in opts])
            result.best_epoch, result.best_valid = (
                row["epoch"],
                {k: v for k, v in row.items() if k.startswith("valid_")},
            )
            return False
        bad_checks += 1
        if bad_checks >= cfg.patience:
            log(
                f"early stop: no better validation NDCG@10 for {cfg.patience} checks; best at epoch {result.best_epoch:g}"
            )
            result.stopped_by = "early_stopping"
            return True
        return False

    steps_per_epoch = math.ceil(n_rows / cfg.batch_size)
    stop = False
    for epoch in range(math.ceil(budget / n_rows)):
        model.train()
        perm = rows_all[torch.randperm(n_rows, generator=gen)]
        progress = Progress(f"epoch {epoch + 1}", steps_per_epoch, "steps", log)  # from 1, as the summaries
        for s in range(0, n_rows, cfg.batch_size):
            rows = perm[s : s + cfg.batch_size]
            if len(rows) < 2:
                continue
            loss = step(rows)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {result.steps}: "
                    "lower the learning rate or raise the temperature; nothing was saved"
                )
            optimizer_step(model, opts, loss, cfg.clip_norm)
            period["losses"].append(loss.item())
            period["examples"] += len(rows)
            result.steps += 1
            if averaged is not None and result.steps % average_every == 0:
                averaged.update_parameters(model)
            result.examples += len(rows)
            progress.update()
            if cfg.max_steps and result.steps >= cfg.max_steps:
                result.stopped_by = "max_steps"
            elif result.examples >= budget:  # the same count on every rank: nothing to agree on
                result.stopped_by = budget_rule
            elif cfg.max_minutes and agree(clock.spent()):
                result.stopped_by = "time_budget"
                log(
                    f"wall-clock budget of {cfg.max_minutes:g} minutes reached at epoch {epoch + (s + len(rows)) / n_rows:.2f}"
                )
            if result.stopped_by:
                stop = True
                break
            if period["examples"] >= every and s + len(rows) < n_rows:  # a check inside the epoch
                if check(epoch + (s + len(rows)) / n_rows):
                    stop = True
                    break
        if stop:
            if period["examples"]:
                check(epoch + min(1.0, (s + len(rows)) / n_rows))
            break
        if check(epoch + 1.0):
            break
    result.stopped_by = result.stopped_by or (
        "early_stopping" if len(result.history) and bad_checks >= cfg.patience else "max_epochs"
    )
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - t0
    result.epochs = result.examples / n_rows
    result.optimizer_states = [o.state_dict() for o in opts]
    return result


def refit(
    result: TrainResult,
    catalog: Catalog,
    refit_set: TrainSet,
    tower: TowerConfig,
    cfg: TrainConfig,
    *,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """The one refit rule (cfg.refit): after `result` (early-stopped on valid), train on
    `refit_set`, the train + valid rows (models.retrieval.data.load_refit_set: never a test pair),
    and return that run, its model the one to test and serve; `result` and its model are left as
    they were (valid figures belong to them). 'continue': `result`'s best weights and optimizer
    state, cfg.refit_epochs passes at cfg.lr; 'retrain': a fresh model of cfg.seed, as many
    passes as `result`'s best check had (at least one); 'off': `result` itself. No early stopping
    (nothing is held out any more): the last pass's weights."""
    if cfg.refit == "off":
        return result
    passes = cfg.refit_epochs if cfg.refit == "continue" else max(1, round(result.best_epoch))
    run = replace(cfg, refit="off", epochs=passes, max_examples=0, min_epochs=0.0, max_minutes=0.0)
    init = None
    if cfg.refit == "continue":
        if result.best_optimizer_states is None:
            raise ValueError("refit='continue' needs the best check's optimizer state: train with the same cfg")
        init = {"model": result.model.state_dict(), "optimizers": result.best_optimizer_states}
    log(f"refit ({cfg.refit}): {passes} passes over {len(refit_set):,} train + valid rows")
    return train(catalog, refit_set, tower, run, log=log, on_epoch=on_epoch, init_state=init, keep_last=True)


def config_dict(tower: TowerConfig, cfg: TrainConfig) -> dict:
    return {"tower": tower.to_dict(), "train": asdict(cfg)}


def summary_metrics(result: TrainResult) -> dict:
    """The figures a checkpoint, MLflow and the asset's metadata record for one training run."""
    return {
        "best_epoch": result.best_epoch,
        "checks": len(result.history),
        "stopped_by": result.stopped_by,
        "epochs_run": round(result.epochs, 3),
        "steps": result.steps,
        "train_seconds": round(result.seconds, 2),
        "examples_per_second": round(result.examples / max(result.seconds, 1e-9), 1),
        **{k: round(v, 5) for k, v in result.best_valid.items()},
    }
