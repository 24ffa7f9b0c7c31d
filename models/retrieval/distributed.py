"""Data-parallel training of the towers on several processes: PyTorch DDP under torchrun.

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m models.retrieval.rank --spec spec.json
    # or two nodes of one rank each, meeting at node 0 (on a cluster: node 0's address):
    python -m torch.distributed.run --nnodes 2 --node-rank {0,1} --nproc-per-node 1 \
        --master-addr 127.0.0.1 --master-port 29500 -m models.retrieval.rank --spec spec.json

The two_tower_model asset launches this through Dagster Pipes when `workers` > 1, with its own
entry point (assets/training/_rank.py: the spec then comes in the Pipes extras);
`torchrun_command` builds the command line for the entry point its caller names.
Every rank runs `training.train` itself with `parallel=DataParallel()`: one training loop.

One step is one global batch of `batch_size` rows, as in one process:

- Every rank draws the same permutation (same seed) and takes its contiguous share of each
  batch: batch_size / workers rows.
- Every rank's positives are gathered, with their gradient, so each row scores the whole
  global batch as in-batch negatives (as in one process, not batch_size / workers of them), and
  each rank's loss is weighted by its share of the rows. DDP averages the dense gradients, so a
  step follows the gradient of the global batch's mean loss; one rank reproduces `train` exactly.
- The id tables (nn.Embedding(sparse=True), SparseAdam) are replicated. DDP all-reduces their
  sparse gradients (gloo implements sparse all-reduce: an all-gather of the touched rows), so
  every rank applies the same SparseAdam step to the same rows and the tables stay
  bit-identical; every run compares all weights across ranks at the end and reports it.
  Row-sharding the tables (each rank owns a slice, lookups travel by all-to-all, torchrec's
  way) pays off once a table no longer fits one process; ours are n_buckets x id_dim floats
  (2M x 32 = 256 MB at 1M items, x3 with SparseAdam's moments), so replication is cheaper.
- Validation is sharded: each rank ranks every W-th validation user and the sums are
  all-reduced, then broadcast from rank 0, so every rank holds the same figures and takes the
  same early-stopping decision (nothing to broadcast, no idle ranks). The work budget counts
  global-batch examples, the same on every rank; a wall-clock budget (only when asked) runs on
  rank 0's clock, broadcast. Rank 0 alone reports to Dagster (Pipes: log lines, a custom
  message per validation check and one with the result) and writes the checkpoint.

Backend: gloo, on CPU. The training step and evaluation build CPU tensors, and NCCL (the CUDA
backend) has no sparse all-reduce ("NCCL does not support all_reduce with sparse tensors"), so
GPU training would need dense id-table gradients or a hand-made gather of the touched rows.

Every rank opens the DuckDB warehouse READ ONLY: DuckDB lets several processes read a file
together as long as no process holds it open for writing. Each rank holds the whole catalog
and train rows, and the valid and test sets of only the validation users early stopping ranks
(TrainConfig.valid_sample, as the asset's one process loads them), not every held-out user's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from models.retrieval.checkpoint import load_checkpoint, save_checkpoint
from models.retrieval.data import Catalog, Datasets, EvalSet, TrainSet, load_for_tower
from models.retrieval.evaluation import evaluate_model
from models.retrieval.towers import TowerConfig, TwoTower
from models.retrieval.training import TrainConfig, config_dict, summary_metrics, train, train_step

BACKEND = "gloo"
SPEC_EXTRA = "spec"  # the Pipes extras key the asset puts the spec under


@dataclass
class RunSpec:
    """Everything a rank needs, written by the asset (JSON): where the data is, the configs,
    where the checkpoint goes."""

    database: str  # the DuckDB warehouse, opened read-only by every rank
    tower: dict  # TowerConfig fields
    train: dict  # TrainConfig fields
    checkpoint_root: str  # rank 0 writes <root>/<version>/ here (save_checkpoint)
    fingerprint: str  # vocabulary fingerprint recorded with the checkpoint
    duckdb_config: dict = field(default_factory=dict)  # e.g. memory_limit, as the asset's resource has it
    resume_from: str | None = None  # checkpoint folder to start from (same vocabulary)
    threads: int = 1  # torch threads per rank: cores / workers, so ranks do not oversubscribe
    summary_path: str | None = None  # rank 0 also writes its result here as JSON

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        unknown = set(d) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown spec fields {sorted(unknown)}; expected {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


def torchrun_command(
    workers: int,
    entry_point: str,
    *,
    spec_path: str | Path | None = None,
    log_dir: str | Path | None = None,
    nodes: int = 1,
    node_rank: int = 0,
    master: str = "127.0.0.1:29500",
) -> list[str]:
    """The torchrun command line, with this interpreter (so the virtualenv's torch is used);
    every rank runs `python -m <entry_point>`: `models.retrieval.rank` reads a spec file, the
    asset passes its Pipes-aware entry point. With log_dir, every rank's stdout/stderr is also
    written under it (`rank_logs`).

    `workers` counts every rank. One node is `--standalone`. With `nodes` > 1 this is node
    `node_rank`'s agent of `workers / nodes` ranks, meeting the others at `master` (host:port,
    torchrun's static rendezvous: node 0 holds global ranks 0.., so rank 0, the one that reports
    and writes the checkpoint, is on node 0). Every node runs the same command but its rank."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if nodes < 1 or workers % nodes:
        raise ValueError(f"{workers} workers cannot be split evenly over {nodes} nodes")
    if not 0 <= node_rank < nodes:
        raise ValueError(f"node_rank {node_rank} is not one of the {nodes} nodes")
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if nodes == 1:
        cmd += ["--standalone", "--nproc-per-node", str(workers)]
    else:
        host, _, port = master.rpartition(":")
        cmd += ["--nnodes", str(nodes), "--node-rank", str(node_rank), "--nproc-per-node", str(workers // nodes)]
        cmd += ["--master-addr", host, "--master-port", port]
    if log_dir is not None:
        cmd += ["--log-dir", str(log_dir), "--tee", "3"]
    cmd += ["-m", entry_point]
    if spec_path is not None:
        cmd += ["--spec", str(spec_path)]
    return cmd


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (for a rendezvous on this machine)."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def rank_logs(log_dir: str | Path, tail_chars: int = 3000) -> dict[str, str]:
    """{"rank N stderr": last characters} from a torchrun --log-dir, for error messages."""
    out = {}
    for path in sorted(Path(log_dir).glob("*/attempt_*/*/stderr.log")):
        text = path.read_text(errors="replace").strip()
        if text:
            out[f"rank {path.parent.name} stderr"] = text[-tail_chars:]
    return out


def threads_per_rank(workers: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


class _GatherRows(torch.autograd.Function):
    """all_gather along dim 0, in rank order; the backward pass hands each rank the sum of every
    rank's gradient for its own rows (what the concatenated batch's rows received)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group, ctx.rows = group, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts)  # (W * rows, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        r = dist.get_rank(ctx.group)
        return grad[r * ctx.rows : (r + 1) * ctx.rows], None


class RankLoss(nn.Module):
    """This rank's share of a global batch -> its loss, weighted by its share of the rows, so
    that DDP's average of the ranks' gradients is the gradient of the global batch's mean loss.
    A module, so that DDP wraps the whole step (train_step calls the towers' methods)."""

    def __init__(
        self,
        model: TwoTower,
        catalog: Catalog,
        train_set: TrainSet,
        cfg: TrainConfig,
        log_q: torch.Tensor,
        gen: torch.Generator,
        group,
    ):
        super().__init__()
        self.model = model
        self.catalog, self.train_set, self.log_q, self.gen, self.group = catalog, train_set, log_q, gen, group
        self.world, self.rank = dist.get_world_size(), dist.get_rank()
        # transformer: the cap on positions per step holds for the global batch
        self.cfg = replace(cfg, max_positions=max(1, cfg.max_positions // self.world))
        self.weight = 1.0

    def share(self, v_pos: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(P, D), (P,) here -> (W * Pmax, D), (W * Pmax,) for the global batch (ids -1 pad a
        rank with fewer positions) and where this rank's rows start."""
        P = len(pos)
        sizes = [torch.zeros(1, dtype=torch.long) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([P]), group=self.group)
        sizes = torch.cat(sizes)
        most, total = int(sizes.max()), int(sizes.sum())
        self.weight = self.world * P / total  # positions, not rows: the transformer has several per row
        ids = [torch.empty(most, dtype=pos.dtype) for _ in range(self.world)]
        dist.all_gather(ids, F.pad(pos, (0, most - P), value=-1), group=self.group)
        v_all = _GatherRows.apply(F.pad(v_pos, (0, 0, 0, most - P)), self.group)  # (W * most, D)
        return v_all, torch.cat(ids), self.rank * most

    def forward(self, rows: torch.Tensor, global_rows: int) -> torch.Tensor:
        self.weight = self.world * len(rows) / global_rows  # share() refines it where it runs
        share = self.share if self.cfg.loss == "infonce" else None
        loss = train_step(self.model, self.catalog, self.train_set, rows, self.cfg, self.log_q, self.gen, share=share)
        return loss * self.weight


class DataParallel:
    """What `training.train(..., parallel=DataParallel())` calls on one rank of an initialised
    process group: the step on this rank's share of each global batch (through DDP), validation
    sharded over the ranks, and agreement on a wall-clock budget when one is asked for. Every rank takes every decision
    (early stopping, best epoch, stopping on time) from the same numbers, so all stay in step."""

    def __init__(self):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.ddp: DistributedDataParallel | None = None

    def wrap(
        self,
        model: TwoTower,
        catalog: Catalog,
        train_set: TrainSet,
        cfg: TrainConfig,
        log_q: torch.Tensor,
        gen: torch.Generator,
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        # `gen` orders the batches (the same on every rank: same seed). Draws inside a step
        # (shared extra negatives, BPR negatives, the transformer's position cap) get their own
        # generator, so a rank that draws more there can never shift the batch order; one rank
        # shares `gen`, exactly as one process does.
        steps_gen = gen if self.world == 1 else torch.Generator().manual_seed(cfg.seed + 1)
        group = dist.new_group(backend=BACKEND)  # the negatives' gather, apart from DDP's buckets
        # DDP broadcasts rank 0's weights (id tables included): every rank starts from the same
        # state. Without content features their tables take no part in the loss.
        self.ddp = DistributedDataParallel(
            RankLoss(model, catalog, train_set, cfg, log_q, steps_gen, group),
            find_unused_parameters=not model.cfg.use_content,
        )
        if self.rank:
            torch.manual_seed(cfg.seed + self.rank)  # dropout masks differ between ranks, as between rows
        return self.step

    def step(self, rows: torch.Tensor) -> torch.Tensor:
        """The loss to back-propagate for global batch `rows`: its value is the global batch's
        mean loss (the same on every rank), its gradient this rank's weighted share."""
        W = self.world
        if len(rows) < W:  # a last batch smaller than the ranks: repeat rows so that each has one
            rows = rows[torch.arange(W) % len(rows)]
        loss = self.ddp(torch.tensor_split(rows, W)[self.rank], len(rows))
        total = loss.detach().clone()
        dist.all_reduce(total)  # the weighted losses sum to W x the global batch's mean loss
        return loss + (total / W - loss).detach()

    def evaluate(
        self,
        model: TwoTower,
        catalog: Catalog,
        valid: EvalSet,
        ks=(10,),
        *,
        coverage: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> dict[str, float]:
        """evaluate_model over every W-th validation user here, combined over the ranks."""
        if self.world == 1:
            return evaluate_model(model, catalog, valid, ks, coverage=coverage, log=log)
        if coverage:
            raise ValueError("coverage cannot be combined from the ranks' shares of the users")
        keys = ["mrr", *(f"{m}@{k}" for k in ks for m in ("hr", "ndcg"))]
        mine = valid.rows(np.arange(self.rank, len(valid), self.world))
        ev = evaluate_model(model, catalog, mine, ks, coverage=False, log=log) if len(mine) else {"users": 0.0}
        n = ev["users"]
        sums = torch.tensor([n, *(n * ev[k] if n else 0.0 for k in keys)], dtype=torch.float64)
        dist.all_reduce(sums)
        dist.broadcast(sums, src=0)  # the same bits on every rank, so the same early-stopping decision
        users = sums[0].item()
        return {"users": users, **{k: sums[i + 1].item() / users for i, k in enumerate(keys)}}

    def agree(self, flag: bool) -> bool:
        """Rank 0's answer (e.g. its clock against the time budget), on every rank."""
        t = torch.tensor([int(flag)])
        dist.broadcast(t, src=0)
        return bool(t.item())


def parameter_digests(model: nn.Module) -> dict[str, str]:
    """sha256 of every parameter's bytes: equal digests = bit-identical weights."""
    return {
        k: hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        for k, v in model.state_dict().items()
    }


def differing_parameters(model: nn.Module) -> list[str]:
    """Parameters whose bytes differ between the ranks (every rank gets the same answer)."""
    mine = parameter_digests(model)
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    return sorted(k for k in mine if len({d[k] for d in every}) > 1)


def load_data(spec: RunSpec, tower: TowerConfig, cfg: TrainConfig) -> Datasets:
    """The warehouse as the asset's one process loads it: the valid and test sets of the
    validation users early stopping ranks (cfg.valid_sample), not every held-out user's (at
    100M events, ~1M users, gigabytes in every rank)."""
    import duckdb

    try:
        con = duckdb.connect(spec.database, read_only=True, config=dict(spec.duckdb_config))
    except duckdb.IOException as e:
        raise RuntimeError(
            f"could not open the warehouse {spec.database} read-only: {e}. Every rank reads it, "
            "so no process may hold it open for writing while training runs"
        ) from e
    try:
        return load_for_tower(con, tower, sample=cfg.valid_sample)
    finally:
        con.close()


class _Reporter:
    """Rank 0's channel to Dagster: Pipes when launched by Dagster, stderr otherwise."""

    def __init__(self, pipes=None):
        self.pipes = pipes

    def log(self, msg: str) -> None:
        if self.pipes is not None:
            self.pipes.log.info(msg)
        else:
            print(f"[rank 0] {msg}", file=sys.stderr, flush=True)

    def message(self, payload: dict) -> None:
        if self.pipes is not None:
            self.pipes.report_custom_message(payload)


def _rank_env() -> tuple[int, int]:
    try:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except KeyError:
        raise SystemExit(
            "distributed training runs under torchrun: "
            "python -m torch.distributed.run --standalone --nproc-per-node N "
            "-m models.retrieval.rank --spec SPEC.json"
        ) from None


def _read_spec(path: str | None, pipes) -> dict:
    if path:
        return json.loads(Path(path).read_text())
    if pipes is None:
        raise ValueError(
            f"no spec: pass --spec SPEC.json, or launch through Dagster Pipes with extras={{'{SPEC_EXTRA}': ...}}"
        )
    return pipes.get_extra(SPEC_EXTRA)


def run(spec: RunSpec, report: _Reporter, started: float) -> dict | None:
    """Train on this rank; rank 0 saves the checkpoint and returns the result summary."""
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(spec.threads)
    tower, cfg = TowerConfig(**spec.tower), TrainConfig(**spec.train)
    data = load_data(spec, tower, cfg)
    init_state = None
    if spec.resume_from:
        _, _, init_state = load_checkpoint(Path(spec.resume_from), expected_fingerprint=spec.fingerprint)
    if rank == 0:
        report.log(
            f"training {tower.encoder} towers on {world} ranks ({BACKEND}, {spec.threads} thread(s) each): "
            f"{len(data.train):,} train rows, global batch {cfg.batch_size} "
            f"({math.ceil(cfg.batch_size / world)} rows per rank), {len(data.catalog):,} items, "
            f"{len(data.valid):,} of {data.users_total['valid']:,} valid users"
        )
    ready = time.perf_counter()
    result = train(
        data.catalog,
        data.train,
        tower,
        cfg,
        valid=data.valid,
        init_state=init_state,
        log=report.log if rank == 0 else (lambda m: None),
        on_epoch=(lambda check, row: report.message({"epoch": row})) if rank == 0 else None,
        parallel=DataParallel(),
    )
    differing = differing_parameters(result.model)  # the best weights, as every rank kept them
    if rank:
        return None
    if differing:
        report.log(f"WARNING: the ranks' weights differ after training in {differing}")
    final = summary_metrics(result)
    path = save_checkpoint(
        Path(spec.checkpoint_root),
        result.model,
        config_dict(tower, cfg),
        spec.fingerprint,
        metrics=final,
        optimizer_states=result.optimizer_states,
    )
    report.log(f"checkpoint {path.name} written by rank 0")
    return {
        "checkpoint": str(path),
        "metrics": final,
        "history": result.history,
        "workers": world,
        "backend": BACKEND,
        "threads_per_rank": spec.threads,
        "ranks_identical": not differing,
        "differing_parameters": differing,
        "startup_seconds": round(ready - started, 2),
    }  # rendezvous, spec, loading the warehouse
