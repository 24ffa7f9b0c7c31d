"""Training on 1 vs N processes (models/retrieval/distributed.py, torchrun + DDP, gloo) against
`train` in one process, on the same generated warehouse and the same TrainConfig.

    python -m benchmarks.bench_distributed [--users 300 --items 200 --events 20000] [--workers 1,2] [--epochs 3]

Rows: `train` in process with 1 thread and with every core, then torchrun with each worker
count (cores / workers threads per rank). Seconds per epoch are the training part of each
validation check (`train_seconds`, validation excluded) averaged over the epochs, on rank 0 for
torchrun; "startup" is torchrun's wall time minus training and validation (process start,
imports, rendezvous, each rank loading the warehouse). "identical" says whether every weight had
the same bytes on every rank at the end. Absolute figures depend on what else the machine runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))


def _warehouse(workdir: Path, users: int, items: int, events: int) -> Path:
    import duckdb

    from models.splits.warehouse import default_warehouse_params
    from models.sources.synthetic import generate
    from models.splits.warehouse import build_warehouse

    db = workdir / f"w-{users}-{items}-{events}.duckdb"
    if not db.exists():
        landing = workdir / f"landing-{users}-{items}-{events}"
        generate(landing, n_users=users, n_items=items, n_events=events, n_clusters=8, seed=5, log=lambda m: None)
        con = duckdb.connect(str(db))
        build_warehouse(con, landing, **default_warehouse_params())
        con.close()
    return db


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument(
        "--max-threads",
        type=int,
        default=0,
        help="cap on torch threads per process (0: the cores); "
        "1 when something else keeps the cores busy: OpenMP threads that wait on a busy core spin",
    )
    args = ap.parse_args()

    import duckdb
    import torch

    from models.retrieval.data import WarehouseShape, load_from_warehouse, tower_config_for
    from models.retrieval.distributed import threads_per_rank, torchrun_command
    from models.retrieval.training import TrainConfig, train

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db = _warehouse(workdir, args.users, args.items, args.events)
    con = duckdb.connect(str(db), read_only=True)
    fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
    tower = tower_config_for(
        WarehouseShape.read(con), dim=32, hidden=32, id_dim=16, history_len=10, encoder="mean", recency=True
    )
    data = load_from_warehouse(
        con, history_len=10, n_hashes=tower.n_hashes, item_buckets=tower.item_buckets, user_buckets=tower.user_buckets
    )
    con.close()
    cfg = dict(
        epochs=args.epochs, patience=args.epochs, batch_size=args.batch_size, lr=5e-3, extra_negatives=32, seed=0
    )
    cores = threads_per_rank(1)
    cap = args.max_threads or cores
    rows = []
    for threads in sorted({1, min(cores, cap)}):
        torch.set_num_threads(threads)
        t = time.perf_counter()
        res = train(data.catalog, data.train, tower, TrainConfig(**cfg), valid=data.valid, log=lambda m: None)
        wall = time.perf_counter() - t
        rows.append(("train, in process", 1, threads, res.history, wall, None))
    for w in [int(x) for x in args.workers.split(",")]:
        out = workdir / f"run-{w}-{time.time_ns()}"
        out.mkdir()
        spec = {
            "database": str(db),
            "tower": tower.to_dict(),
            "train": cfg,
            "fingerprint": fingerprint,
            "checkpoint_root": str(out / "models"),
            "summary_path": str(out / "summary.json"),
            "threads": min(threads_per_rank(w), cap),
        }
        (out / "spec.json").write_text(json.dumps(spec))
        t = time.perf_counter()
        proc = subprocess.run(
            torchrun_command(w, "models.retrieval.rank", spec_path=out / "spec.json"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(spec["threads"])},
        )
        wall = time.perf_counter() - t
        if proc.returncode:
            sys.exit(f"torchrun with {w} workers failed:\n{proc.stderr[-3000:]}")
        s = json.loads((out / "summary.json").read_text())
        rows.append(("torchrun", w, spec["threads"], s["history"], wall, s["ranks_identical"]))

    print(
        f"{len(data.train):,} train rows, {len(data.catalog):,} items, {len(data.valid):,} valid users; "
        f"global batch {args.batch_size}, {args.epochs} epochs, {cores} cores"
    )
    print(
        "| how | workers | threads/rank | s/epoch | vs in process (1 thread) | startup s | best valid NDCG@10 | identical |"
    )
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for how, w, threads, hist, wall, identical in rows:
        per_epoch = sum(r["train_seconds"] for r in hist) / len(hist)
        base = base or per_epoch
        busy = sum(r["train_seconds"] + r.get("eval_seconds", 0.0) for r in hist)
        startup = f"{wall - busy:.1f}" if how == "torchrun" else ""
        best = max(r["valid_ndcg@10"] for r in hist)
        print(
            f"| {how} | {w} | {threads} | {per_epoch:.2f} | {base / per_epoch:.2f}x | {startup} | {best:.4f} | "
            f"{'' if identical is None else identical} |"
        )


if __name__ == "__main__":
    main()
