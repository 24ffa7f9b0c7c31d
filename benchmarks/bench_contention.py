"""The demo's two-tower beside other work: seconds per epoch quiet, beside one busy CPU loop and
(optionally) beside other torch training jobs, for each way torch's OpenMP threads may wait.

    python benchmarks/bench_contention.py [--epochs 3] [--threads 0] [--torch-jobs 0]
        [--modes towerflow,libgomp,one-thread,passive] [--workdir DIR]

The data is the demo's (`towerflow generate` defaults through the real warehouse build), the
model the default TowerConfig and TrainConfig, trained `--epochs` epochs (patience = epochs, so
every run trains the same work). Each run is a fresh process, because OpenMP reads its settings
when torch loads:

- libgomp: the library's own default (GOMP_SPINCOUNT unset: a waiting thread spins 300,000
  times before it sleeps) - the peer, what plain PyTorch does;
- towerflow: what importing `models` sets (GOMP_SPINCOUNT=1000, models/__init__.py);
- passive: OMP_WAIT_POLICY=PASSIVE (a waiting thread sleeps at once);
- one-thread: one torch thread, towerflow's setting.

Seconds per epoch are the training part of each epoch (validation excluded), averaged over the
epochs; "ratio" is loaded / quiet for the same mode (goal: at most 2.5x beside one busy loop).
The last column says whether every run of a mode reached the same validation NDCG@10 at every
epoch: budgets count work (models/budget.py), so load changes the time a model takes, not the
model. Timings depend on everything else the machine runs: run it on an otherwise idle machine
for figures to quote.
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
MODES = ("towerflow", "libgomp", "one-thread", "passive")
BUSY_LOOP = [sys.executable, "-c", "while True: pass"]


def _warehouse(workdir: Path) -> Path:
    """The demo's data (generate's defaults, as `towerflow generate`) in a warehouse, built once."""
    import duckdb

    from models.sources.synthetic import generate
    from models.splits.warehouse import build_warehouse, default_warehouse_params

    db = workdir / "demo.duckdb"
    if not db.exists():
        generate(workdir / "landing", log=lambda m: None)
        con = duckdb.connect(str(db))
        build_warehouse(con, workdir / "landing", **default_warehouse_params())
        con.close()
    return db


def child(mode: str, db: Path, epochs: int, threads: int, out: Path | None) -> None:
    """Train the demo's two-tower in this process under `mode`; write its history to `out`."""
    import models  # noqa: F401 (sets GOMP_SPINCOUNT unless the environment has one)

    if mode in ("libgomp", "passive"):
        os.environ.pop("GOMP_SPINCOUNT", None)  # before torch loads libgomp, which reads it once
    if mode == "passive":
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import duckdb
    import torch

    from models.retrieval.data import WarehouseShape, load_for_tower, tower_config_for
    from models.retrieval.training import TrainConfig, train

    torch.set_num_threads(1 if mode == "one-thread" else threads)
    con = duckdb.connect(str(db), read_only=True)
    tower = tower_config_for(WarehouseShape.read(con))
    data = load_for_tower(con, tower)
    con.close()
    res = train(
        data.catalog,
        data.train,
        tower,
        TrainConfig(epochs=epochs, patience=epochs),
        valid=data.valid,
        log=lambda m: None,
    )
    if out is not None:
        out.write_text(
            json.dumps(
                {
                    "rows": len(data.train),
                    "threads": torch.get_num_threads(),
                    "epochs": res.epochs,
                    "s_per_epoch": sum(r["train_seconds"] for r in res.history) / len(res.history),
                    "valid": [r["valid_ndcg@10"] for r in res.history],
                }
            )
        )


def _env() -> dict:
    """The environment children start from: no OpenMP waiting settings of the caller's."""
    return {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}


def _child_cmd(mode: str, db: Path, epochs: int, threads: int, out: Path | None) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--db", str(db)]
    cmd += ["--epochs", str(epochs), "--threads", str(threads)]
    return cmd + (["--out", str(out)] if out is not None else [])


def measure(mode: str, load: str, db: Path, args, workdir: Path) -> dict:
    """One measured run of `mode` beside `load` (quiet, busy loop, torch jobs)."""
    loads = []
    if load == "busy loop":
        loads = [subprocess.Popen(BUSY_LOOP)]
    elif load == "torch jobs":  # other users' trainings: the same model, same mode, many epochs
        loads = [
            subprocess.Popen(
                _child_cmd(mode, db, 1000, args.threads, None),
                env=_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(args.torch_jobs)
        ]
    out = workdir / f"{mode}-{load.replace(' ', '-')}-{time.time_ns()}.json"
    try:
        time.sleep(2.0 if loads else 0.0)  # let the load start before the measured run
        subprocess.run(_child_cmd(mode, db, args.epochs, args.threads, out), env=_env(), check=True, cwd=ROOT)
    finally:
        for p in loads:  # only the processes this run started, by their handle
            p.kill()
            p.wait()
    result = json.loads(out.read_text())
    print(f"{mode}, {load}: {result['s_per_epoch']:.2f} s/epoch, valid NDCG@10 {result['valid']}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the CPUs this process may use)")
    ap.add_argument("--torch-jobs", type=int, default=0, help="also measure beside this many other torch trainings")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        child(args.child, args.db, args.epochs, args.threads, args.out)
        return

    from models.retrieval.distributed import threads_per_rank

    args.threads = args.threads or threads_per_rank(1)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-contention-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db = _warehouse(workdir)
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        sys.exit(f"--modes: unknown {sorted(unknown)}; choose from {MODES}")
    loads = ["quiet", "busy loop"] + (["torch jobs"] if args.torch_jobs else [])
    runs = {(m, load): measure(m, load, db, args, workdir) for m in modes for load in loads}

    first = runs[(modes[0], "quiet")]
    print(
        f"demo two-tower: {first['rows']:,} train rows, {args.epochs} epochs per run, {args.threads} torch "
        f"thread(s) ({threads_per_rank(1)} CPUs), load average {os.getloadavg()[0]:.1f} at the end"
    )
    head = "| OpenMP waiting | threads | quiet s/epoch | beside 1 busy loop | ratio |"
    if args.torch_jobs:
        head += f" beside {args.torch_jobs} torch jobs | ratio |"
    print(head + " same valid NDCG@10 every epoch | valid NDCG@10 last epoch |")
    print("|---" * (head.count("|") + 1) + "|")
    for m in modes:
        quiet = runs[(m, "quiet")]
        cells = [m, str(quiet["threads"]), f"{quiet['s_per_epoch']:.2f}"]
        for load in loads[1:]:
            r = runs[(m, load)]
            cells += [f"{r['s_per_epoch']:.2f}", f"{r['s_per_epoch'] / quiet['s_per_epoch']:.2f}x"]
        same = all(runs[(m, load)]["valid"] == quiet["valid"] for load in loads)
        cells += ["yes" if same else "NO", f"{quiet['valid'][-1]:.4f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
