"""Training and evaluating the generative retriever (no Dagster).

Training is teacher forcing on the train split's rows (every train positive with the user's
previous L positives, left-truncated; padding items masked in the encoder), cross-entropy over
each of the 4 codes. With the causal encoder (the default) a step draws windows, not rows: a
user's positives L + 1 at a time (`TrainSet.windows(window_stride)`, the rows ending one; every
row is a target once a pass, as before), encoded once, each position's next item a target
decoded from the memory up to it (`GenerativeRetriever.forward_windows`): the encoder runs once
for `window_stride` targets instead of once each, and a step takes batch_size / window_stride
windows, about batch_size targets. A window trains its last `window_stride` positions only, so a
target reads at least L - window_stride + 1 items (as serving reads L) where windows that did not
overlap gave it 0 to L - 1 (as in SASRec). The bidirectional encoder and ETEGRec mode (its
alignment losses read one state a row) train on rows, one encoder pass each. AdamW at a constant
learning rate or one that decays over the work budget (`lr_schedule`), gradient clipping, early stopping on validation
NDCG@10 from constrained beam search, seeded; the best weights are kept (those of a moving
average of the weights by default, `ema_decay`). `mode="etegrec"` trains the RQ-VAE
tokenizer in alternation with the retriever, tied by two alignment losses
(`models.generative.etegrec`); the best epoch's tokenizer and codes are kept with its weights.

Evaluation uses the same users, targets and exclusions as the two-tower's full-ranking
evaluation (`models.retrieval.data.EvalSet`): the beam (width `beam`) over the whole catalog's
codes, the user's seen items removed, the target's rank among the rest; a target outside the
beam counts as a miss. HR@K / NDCG@K are reported for K <= beam, decode time per user, and
chance_hr@10 (what 10 random unseen items would hit: the floor promotion asks the retriever to
clear).

A checkpoint folder is the pair that serves: the weights and the codes it was trained with
(models/generative/store.py); the manifest's "latest" is written here, its "current" (the
promoted one) by the promoted_generative asset.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from models import artifacts
from models.artifacts import atomic_folder
from models.averaging import check_ema_decay, moving_average
from models.budget import LR_SCHEDULES, WallClock, examples_budget, lr_factor
from models.generative.beam import PrefixTrie, beam_search, top_k_unseen
from models.generative.etegrec import JointTokenizer, Projections, alignment_losses, distinct_rows
from models.generative.seq2seq import GenerativeRetriever, Seq2SeqConfig
from models.progress import Progress
from models.retrieval.data import EvalSet, TrainSet
from models.settings import setting


class GenerativeDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing is saved."""


@dataclass
class GenTrainConfig:
    batch_size: int = setting(256, "Training rows per step (the causal encoder's: batch_size / window_stride windows).")
    window_stride: int = setting(
        5,
        "causal encoder: rows between training windows. A window trains its last `stride` "
        "targets only, so every row is a target once a pass, read from at least history_len - "
        "stride + 1 items (fewer only for a user's first items), close to what serving reads; 0 "
        "= history_len (windows do not overlap: a target reads the 0..L-1 window items before "
        "it). On MovieLens 5 lifted valid NDCG@10 on every seed over 0 (0.0676 against 0.0561, "
        "3 seeds; test 0.0518 against 0.0470) at 1.2-1.4x the CPU a step (benchmarks/README.md).",
        ge=0,
    )
    epochs: int = setting(
        30,
        "Passes over the training rows at most (the work budget's ceiling); early stopping on "
        "valid NDCG@10 usually ends sooner.",
    )
    max_examples: int = setting(
        1_500_000,
        "Work budget in training rows, raised to min_epochs passes and lowered to `epochs` passes "
        "(0 = `epochs` passes): about 15 passes over MovieLens' 99k rows (a few CPU minutes with "
        "the causal encoder's windows), one pass over 10M events' 2.6M. Counted in work: a loaded "
        "machine trains the same model.",
        ge=0,
    )
    min_epochs: float = setting(1.0, "Passes the work budget always allows, however large the data.", ge=0)
    lr: float = setting(
        3e-3, "AdamW learning rate (1e-3 sat on the code marginals for several epochs on the planted data)."
    )
    weight_decay: float = setting(
        0.1,
        "AdamW weight decay of the retriever's weights. On MovieLens 0.1 lifted valid NDCG@10 "
        "over 1e-2 (loo 0.0688 against 0.0676, 3 seeds; last5 higher on 2 of 2) and test (loo "
        "0.0558 against 0.0518) at no cost a step: weights per item over-fit there "
        "(benchmarks/README.md).",
    )
    clip_norm: float = 1.0
    lr_schedule: str = setting(
        "constant",
        "constant, or cosine: the learning rate decays to 0 over the work budget (after a warm-up of 1% of its steps).",
    )
    ema_decay: float = setting(
        0.999,
        "Validate, keep and serve an exponential moving average of the seq2seq weights (the "
        "two-tower's rule, models/averaging.py: decay min(ema_decay, (1 + t) / (10 + t)) at "
        "retriever step t); in etegrec mode the tokenizer trains as without it. 0 = the trained "
        "weights. MovieLens, 3 seeds: test NDCG@10 0.0320 -> 0.0445, higher on every seed (README).",
        ge=0.0,
        lt=1.0,
    )
    patience: int = setting(
        5,
        "Epochs without a better valid NDCG@10 before stopping (3 ended a MovieLens run at pass 8 "
        "on a dip, where the averaged curves rise to pass 15).",
    )
    beam: int = setting(
        20,
        "Beam width of validation, evaluation and serving (over-generated, then seen items are removed).",
    )
    valid_users: int = setting(2_000, "Early stopping decodes a seeded sample of this many validation users (0 = all).")
    seed: int = setting(0, "Seeds torch and NumPy.")
    max_minutes: float = setting(
        0.0,
        "Wall-clock training budget, only when asked (0 = none, the default): it keeps the best "
        "weights so far, but the model then depends on the machine's load.",
        ge=0,
    )
    max_steps: int | None = None  # tests and smoke runs
    mode: str = setting(
        "tiger",
        "tiger (the tokenizer stays as item_semantic_ids made it) or etegrec (ETEGRec: "
        "the RQ-VAE tokenizer trains in alternation with the retriever under two alignment losses, "
        "and this asset publishes the moved tokenizer's codes as the current semantic IDs; it needs "
        "item_semantic_ids kind rqvae).",
    )
    cycle: int = setting(2, "etegrec: the last of every `cycle` epochs trains the tokenizer (ETEGRec: 2-4).")
    sia_weight: float = setting(1e-4, "etegrec: weight of the sequence-item alignment (symmetric KL).")
    psa_weight: float = setting(
        3e-4, "etegrec: weight of the preference-semantic alignment (InfoNCE, decoder state vs reconstruction)."
    )
    tokenizer_lr: float = setting(1e-4, "etegrec: the tokenizer epochs' learning rate (Adam).")
    align_temperature: float = 0.07  # etegrec: the InfoNCE temperature

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        check_ema_decay(self.ema_decay)
        if self.mode == "etegrec" and self.cycle < 2:
            raise ValueError(f"cycle must be at least 2 (one tokenizer epoch, then retriever epochs), got {self.cycle}")

    @property
    def valid_sample(self) -> tuple[int, int]:
        """(n, seed) of the validation users early stopping decodes, the one place that decides
        them: train_generative samples its valid set with it, and the asset's loader builds only
        those users' sets (load_from_warehouse(sample=...)), which the sample then keeps."""
        return self.valid_users, self.seed


MODES = ("tiger", "etegrec")


@dataclass
class GenTrainResult:
    model: GenerativeRetriever
    best_epoch: int = -1
    best_valid: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU time: what a loaded machine does not inflate as much
    stopped_by: str = ""
    optimizer_state: dict | None = None
    # etegrec: the jointly trained tokenizer (best epoch's state), every item's codes from it and
    # the (N + 1, 4) table by catalog position the best weights were validated with
    tokenizer: torch.nn.Module | None = None
    semantic_ids: object | None = None
    table: np.ndarray | None = None


def _hist_codes(table: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """(N + 1, 4) code table, (B, L) catalog positions (-1 = padding) -> (B, L, 4)."""
    return table[torch.where(history < 0, torch.full_like(history, len(table) - 1), history)]


def window_batch(
    train_set: TrainSet, codes: torch.Tensor, rows: torch.Tensor, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows ending at `rows` (`TrainSet.windows(stride)`: each row's history and target
    are a window's L + 1 items, left-padded) -> (b, L, 4) the codes of each window's first L items
    and (b, L, 4) the codes of the item after each that the window trains, -1 where it trains none:
    its last `stride`, the rows no earlier window trained, so every row is a target once a pass (a
    user's first window holds at most `stride` rows, so its padding covers the rest). What
    `GenerativeRetriever.forward_windows` takes."""
    L = train_set.history.shape[1]
    items = torch.cat([train_set.history[rows], train_set.target[rows, None]], 1)  # (b, L + 1)
    fresh = torch.arange(1, L + 1) > L - stride  # (L,)
    return _hist_codes(codes, items[:, :-1]), _hist_codes(codes, torch.where(fresh, items[:, 1:], -1))


def _metrics(ranks: np.ndarray, ks) -> dict[str, float]:
    """ranks: 1-based, np.inf for a target outside the beam."""
    out = {"users": float(len(ranks)), "mrr@beam": float(np.mean(np.where(np.isfinite(ranks), 1.0 / ranks, 0.0)))}
    for k in ks:
        hit = ranks <= k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.mean(np.where(hit, 1.0 / np.log2(np.minimum(ranks, 1e9) + 1), 0.0)))
    return out


@torch.no_grad()
def generate_unseen(
    model: GenerativeRetriever,
    trie: PrefixTrie,
    table: torch.Tensor,
    ev: EvalSet,
    start: int,
    end: int,
    *,
    beam: int = 20,
    batch: int = 256,
) -> tuple[np.ndarray, float]:
    """Rows start..end of `ev` -> ((b, beam) catalog positions the constrained beam search
    generates, best first, seen items removed, -1 padded; the beam search's seconds)."""
    t0 = time.perf_counter()
    items, _ = beam_search(model, trie, _hist_codes(table, ev.history[start:end]), beam, batch=batch)
    seconds = time.perf_counter() - t0
    return top_k_unseen(items, ev.seen_of(range(start, end)), beam), seconds


def evaluate_generative(
    model: GenerativeRetriever,
    trie: PrefixTrie,
    table: torch.Tensor,
    ev: EvalSet,
    *,
    beam: int = 20,
    ks=(10, 20),
    batch: int = 256,
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """HR/NDCG@K for K <= beam on `ev` (catalog positions = trie rows), with decode ms per user
    and chance_hr@10: what 10 items drawn at random from each user's unseen catalog items would
    hit on average (the floor a retriever that learned anything clears)."""
    if len(ev) == 0:
        raise ValueError("no evaluation users: nothing to rank")
    ks = tuple(k for k in ks if k <= beam)
    ranks = np.full(len(ev), np.inf)
    progress = Progress(f"{ev.name} beam search", len(ev), "users", log)
    decode = 0.0
    covered: set = set()
    for s in range(0, len(ev), batch):
        e = min(len(ev), s + batch)
        top, seconds = generate_unseen(model, trie, table, ev, s, e, beam=beam, batch=batch)  # (b, beam)
        decode += seconds
        tgt = ev.target[s:e].numpy()
        hit = top == tgt[:, None]
        found = hit.any(1)
        ranks[s:e][found] = hit[found].argmax(1) + 1
        covered.update(top[:, : min(10, beam)][top[:, : min(10, beam)] >= 0].tolist())
        progress.update(e - s)
    out = _metrics(ranks, ks)
    out["coverage@10"] = len(covered) / len(trie)
    unseen = len(trie) - np.array([len(np.unique(x)) for x in ev.seen_of(range(len(ev)))])
    out["chance_hr@10"] = float(np.mean(np.minimum(1.0, 10 / np.maximum(unseen, 1))))
    out["decode_ms_per_user"] = 1000 * decode / len(ev)
    out["beam"] = float(beam)
    return out


def train_generative(
    table: np.ndarray | None,
    train_set: TrainSet,
    model_cfg: Seq2SeqConfig,
    cfg: GenTrainConfig,
    *,
    valid: EvalSet | None = None,
    log: Callable[[str], None] = print,
    on_check: Callable[[int, dict], None] | None = None,
    joint: JointTokenizer | None = None,
) -> GenTrainResult:
    """table: (N + 1, 4) codes by catalog position (`codes_by_position`). In etegrec mode the
    codes come from `joint` (the tokenizer being trained and the item vectors) and `table` is
    ignored (pass None)."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    assert train_set.history.shape[1] == model_cfg.history_len, (train_set.history.shape, model_cfg.history_len)
    if (cfg.mode == "etegrec") != (joint is not None):
        raise ValueError(
            "etegrec mode trains the tokenizer with the retriever: pass joint=JointTokenizer(...) "
            "(and only in that mode)"
        )
    model = GenerativeRetriever(model_cfg)
    sid = None
    if joint is not None:
        tok = joint.tokenizer
        if tok.collision_size != model_cfg.level_sizes[3]:
            raise ValueError(
                f"the retriever's collision range ({model_cfg.level_sizes[3]}) is not its tokenizer's "
                f"({tok.collision_size}): build Seq2SeqConfig with the tokenizer's collision_size"
            )
        sid, table = joint.encode()
        proj = Projections(model_cfg.d_model, tok.cfg.code_dim, tok.dim)
        tok_opt = torch.optim.Adam(tok.parameters(), lr=cfg.tokenizer_lr)
        log(
            f"etegrec: one tokenizer epoch in every {cfg.cycle}; alignment weights SIA {cfg.sia_weight}, PSA {cfg.psa_weight}"
        )
    else:
        proj = torch.nn.Module()  # no parameters
    rec_params = [*model.parameters(), *proj.parameters()]
    opt = torch.optim.AdamW(rec_params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    codes = torch.as_tensor(table)
    trie = PrefixTrie(table[:-1], model_cfg.level_sizes)
    # the causal encoder trains on windows (a user's positives, L + 1 at a time, read once for
    # every target in them); etegrec's alignment losses read one state per row, so it trains on rows
    windowed = model_cfg.encoder == "causal" and joint is None
    L = model_cfg.history_len
    n = len(train_set)  # training rows: each is one target a pass, in a window or alone
    if n == 0:
        raise ValueError("no training rows: the train split is empty")
    stride = min(cfg.window_stride or L, L)
    units = train_set.windows(stride) if windowed else torch.arange(n)  # what a step draws
    per_step = math.ceil(cfg.batch_size / stride) if windowed else cfg.batch_size
    if valid is not None and len(valid):
        valid = valid.sample(*cfg.valid_sample)
        log(f"early stopping on validation NDCG@10 (beam {cfg.beam}) over {len(valid):,} users, {len(trie):,} items")
    result = GenTrainResult(model)
    best, best_state, bad = -math.inf, None, 0
    # the weights judged at each check and kept: the average's when asked, else the trained ones.
    # Only parameters are averaged: the buffers are constants (code offsets, masks).
    averaged, average_every = moving_average(model, cfg.ema_decay, use_buffers=False)
    judged = averaged.module if averaged is not None else model
    t0, c0 = time.perf_counter(), time.process_time()
    clock = WallClock(cfg.max_minutes)
    steps_per_epoch = math.ceil(len(units) / per_step)
    budget = examples_budget(n, epochs=cfg.epochs, max_examples=cfg.max_examples, min_epochs=cfg.min_epochs)
    budget_rule = "max_epochs" if budget == cfg.epochs * n else "max_examples"
    log(f"work budget: {budget:,} training rows ({budget / n:.3g} passes over {n:,}; {budget_rule})")
    examples = 0
    epochs_planned = math.ceil(budget / n)
    rec_steps_total = sum(  # the retriever's steps in the budget (not the tokenizer epochs'): the schedule's length
        math.ceil(min(n, budget - e * n) / n * steps_per_epoch)
        if windowed
        else math.ceil(min(n, budget - e * n) / per_step)
        for e in range(epochs_planned)
        if joint is None or (e + 1) % cfg.cycle
    )
    rec_step = 0
    for epoch in range(epochs_planned):
        tok_epoch = joint is not None and (epoch + 1) % cfg.cycle == 0
        model.train(not tok_epoch)
        for p in rec_params:
            p.requires_grad_(not tok_epoch)
        if joint is not None:
            tok.train(tok_epoch)
            tok.requires_grad_(tok_epoch)
        perm = units[torch.randperm(len(units), generator=gen)]
        sums, te = defaultdict(float), time.perf_counter()
        what = "tokenizer epoch" if tok_epoch else "generative epoch"
        progress = Progress(f"{what} {epoch}", steps_per_epoch, "steps", log)
        for s in range(0, len(units), per_step):
            rows = perm[s : s + per_step]
            if windowed:
                logits, target = model.forward_windows(
                    *window_batch(train_set, codes, rows, stride)
                )  # (M, 4, V), (M, 4)
            else:
                hist = _hist_codes(codes, train_set.history[rows])  # (B, L, 4)
                target_pos = train_set.target[rows]  # (B,)
                target = codes[target_pos]  # (B, 4)
                with torch.no_grad() if tok_epoch else nullcontext():
                    logits, seq_state, first_state = model.forward_states(hist, target)  # (B, 4, V), (B, D), (B, D)
            # the targets' 4 codes each (a tokenizer epoch's logits carry no gradient)
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
            seen = len(target)
            loss, parts = ce, {"loss": ce}
            if joint is not None:
                u = distinct_rows(target_pos)
                sia, psa, rq = alignment_losses(
                    tok, proj, seq_state[u], first_state[u], joint.by_position[target_pos[u]], cfg.align_temperature
                )
                loss = (rq if tok_epoch else ce) + cfg.sia_weight * sia + cfg.psa_weight * psa
                parts.update(sia=sia, psa=psa, rq_loss=rq)
            if not torch.isfinite(loss):
                raise GenerativeDiverged(
                    f"loss became {loss.item()} at epoch {epoch}, step {result.steps}: "
                    "lower the learning rate; nothing was saved"
                )
            step_opt, params = (tok_opt, list(tok.parameters())) if tok_epoch else (opt, rec_params)
            if not tok_epoch:
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * lr_factor(cfg.lr_schedule, rec_step, rec_steps_total)
                rec_step += 1
            step_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
            step_opt.step()
            if averaged is not None and not tok_epoch and rec_step % average_every == 0:
                averaged.update_parameters(model)
            for k, v in parts.items():
                sums[k] += v.item()
            sums["batches"] += 1
            result.steps += 1
            examples += seen
            progress.update()
            if cfg.max_steps and result.steps >= cfg.max_steps:
                result.stopped_by = "max_steps"
            elif examples >= budget:  # counted in rows, the same on any machine
                result.stopped_by = budget_rule
            elif clock.spent():
                result.stopped_by = "time_budget"
            if result.stopped_by:
                break
        batches = sums.pop("batches")
        row = {
            "epoch": epoch + 1,
            **{k: v / batches for k, v in sums.items()},
            "train_seconds": time.perf_counter() - te,
        }
        if not tok_epoch:
            row["lr"] = opt.param_groups[0]["lr"]  # at the epoch's last step
        if joint is not None:
            row["tokenizer_epoch"] = float(tok_epoch)
        if tok_epoch:  # new codes for every item; the retriever's next epoch reads them
            row["dead_code_restarts"] = float(joint.restart_dead_codes(gen))
            sid, new_table = joint.encode()
            row["recoded"] = float((new_table[:-1] != table[:-1]).any(1).mean())
            row["collision_rate"] = float(sid.stats["collision_rate"])
            table, codes = new_table, torch.as_tensor(new_table)
            trie = PrefixTrie(table[:-1], model_cfg.level_sizes)
        elif valid is not None and len(valid):
            tv = time.perf_counter()
            ev = evaluate_generative(judged, trie, codes, valid, beam=cfg.beam, ks=(10,))
            row.update({f"valid_{k}": v for k, v in ev.items() if k in ("ndcg@10", "hr@10")})
            row["eval_seconds"] = time.perf_counter() - tv
        result.history.append(row)
        log(
            f"{what} {epoch + 1}: loss {row['loss']:.4f}"
            + (f", tokenizer loss {row['rq_loss']:.4f}, {row['recoded']:.1%} of items recoded" if tok_epoch else "")
            + (f", SIA {row['sia']:.4f}, PSA {row['psa']:.4f}" if joint is not None else "")
            + (f", valid NDCG@10 {row['valid_ndcg@10']:.4f}" if "valid_ndcg@10" in row else "")
        )
        if on_check:
            on_check(epoch, row)
        if not tok_epoch:  # a tokenizer epoch is judged by the retriever epoch after it
            score = row.get("valid_ndcg@10", -row["loss"])
            if score > best:
                best, bad = score, 0
                best_state = (
                    copy.deepcopy(judged.state_dict()),
                    copy.deepcopy(tok.state_dict()) if joint is not None else None,
                    table,
                    sid,
                )
                result.best_epoch = epoch + 1
                result.best_valid = {k: v for k, v in row.items() if k.startswith("valid_")}
            else:
                bad += 1
        if result.stopped_by:
            break
        if bad >= cfg.patience:
            result.stopped_by = "early_stopping"
            log(
                f"early stop: no better validation NDCG@10 for {cfg.patience} checks; best at epoch {result.best_epoch}"
            )
            break
    result.stopped_by = result.stopped_by or budget_rule
    if best_state is not None:
        model.load_state_dict(best_state[0])
        table, sid = best_state[2], best_state[3]
        if joint is not None:
            tok.load_state_dict(best_state[1])
    model.eval()
    model.requires_grad_(True)
    if joint is not None:
        tok.eval()
        tok.requires_grad_(True)
        result.tokenizer, result.semantic_ids, result.table = tok, sid, table
    result.seconds, result.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    result.optimizer_state = opt.state_dict()
    return result


def summary_metrics(result: GenTrainResult) -> dict:
    return {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped_by": result.stopped_by,
        "steps": result.steps,
        "train_seconds": round(result.seconds, 2),
        "train_cpu_seconds": round(result.cpu_seconds, 2),
        **{k: round(v, 5) for k, v in result.best_valid.items()},
    }


# ---- checkpoints: artifacts/generative/<version>/{model.pt, config.json}, manifest.json {"latest", "versions"}


def save_generative(
    root: Path,
    model: GenerativeRetriever,
    meta: dict,
    optimizer_state: dict | None = None,
    files: Callable[[Path], None] | None = None,
) -> Path:
    """A new checkpoint folder root/<version>/ (model.pt, config.json, and whatever `files` writes
    into the folder before it appears: the codes it was trained with), then the manifest's
    "latest". "current", the promoted checkpoint, is promoted_generative's to write."""
    version = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    with atomic_folder(root, version) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer_state or {}}, tmp / "model.pt")
        if files is not None:
            files(tmp)
        (tmp / "config.json").write_text(
            json.dumps(
                {
                    "version": version,
                    "model": model.cfg.to_dict(),
                    **meta,
                    "created_at": datetime.now(timezone.utc).isoformat(),
                },
                indent=2,
                sort_keys=True,
                default=str,
            )
        )
    manifest = artifacts.read_manifest(root) or {"latest": None, "versions": []}
    manifest["versions"].append(version)
    manifest["latest"] = version
    artifacts.write_manifest(root, manifest)
    return root / version


def latest_generative(root: Path) -> str | None:
    """The newest checkpoint (what generative_evaluation measures)."""
    return (artifacts.read_manifest(root) or {}).get("latest")


def promoted_generative_version(root: Path) -> str | None:
    """The promoted checkpoint (what serves), or None before the first promotion: the manifest's
    "current", written by promoted_generative as the local mirror of towerflow-generative@champion."""
    return (artifacts.read_manifest(root) or {}).get("current")


def load_generative(path: Path) -> tuple[GenerativeRetriever, dict]:
    """(model in eval mode, config.json) from a checkpoint folder; weights only, never pickle."""
    meta = json.loads((path / "config.json").read_text())
    meta["model"].setdefault("encoder", "bidirectional")  # saved before the causal encoder
    model = GenerativeRetriever(Seq2SeqConfig(**meta["model"]))
    model.load_state_dict(torch.load(path / "model.pt", weights_only=True)["model"])
    model.eval()
    return model, meta


def train_config_dict(cfg: GenTrainConfig) -> dict:
    return asdict(cfg)
