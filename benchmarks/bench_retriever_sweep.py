"""The retriever's configuration sweep on MovieLens ml-latest-small (671 users, 9,066 items,
per-user leave-last-out, full ranking, seen items excluded): which encoder, loss, history length,
dropout, learning rate, temperature and features make the two-tower's default.

    python benchmarks/bench_retriever_sweep.py --workdir DIR --configs NAME[,NAME...] [--seeds 0,1,2]
    python benchmarks/bench_retriever_sweep.py --list
    python benchmarks/bench_retriever_sweep.py --cost 9066,50000,1000000 [--cost-steps 5] [--cost-configs default,NAME]

Every configuration is the product default (TowerConfig / TrainConfig) plus the overrides named in
CONFIGS; the data goes through the real pipeline (benchmarks/movielens.build_data,
a copy of its warehouse in --workdir is reused). Each run trains on train, early-stops on valid
NDCG@10 (every valid user, once per epoch, no time budget: budgets in epochs), and scores test
with the user's train + valid history. One torch thread. Prints one table (valid and test
NDCG@10 / HR@10, mean ± half-range over seeds, best epoch, epochs run) and appends one JSON line
per run to --out, so a sweep can be run in pieces and read back with --report.

--cost times training steps of the default tower (mean encoder, batch 256; --cost-configs names
other configurations to time beside it, their loss set by the column) on random catalogs of
the given sizes, with the loss over the whole catalog and with sampled negatives (in-batch + 512
uniform + 8 hard, logQ), to show where the full-catalog rule (`full_catalog_items`) stops paying:
a full-catalog step embeds every item, so its cost grows with the catalog, a sampled one does not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.movielens import build_data, by_config, spread  # noqa: E402
from models.retrieval.data import WarehouseShape, tower_config_for  # noqa: E402
from models.retrieval.evaluation import evaluate_model  # noqa: E402
from models.retrieval.towers import TowerConfig  # noqa: E402
from models.retrieval.training import TrainConfig, full_catalog, train  # noqa: E402

SAMPLED = dict(full_catalog_items=0)  # in-batch + 512 uniform + hard negatives, logQ
FULL = dict(full_catalog_items=100_000)  # cross-entropy over the whole catalog (MovieLens: 9,066 items)
TRANSFORMER = dict(encoder="transformer", layers=2, batch_size=64, window_stride=10)

# name -> overrides of the product defaults (TowerConfig and TrainConfig fields by name)
CONFIGS = {
    "default": dict(),  # the product defaults, beside every candidate in the same sweep
    # the default (mean encoder, sampled) with one thing changed; the width follows the catalog
    # by default (towers.width_for: 128 on MovieLens), these fix it
    "mean-dim64": dict(dim=64, hidden=64),  # the default before the width rule
    "mean-dim128": dict(dim=128, hidden=128),
    "mean-dim256": dict(dim=256, hidden=256),
    "mean-hidden128": dict(hidden=128),  # the wider towers with the 64-d index
    # the loss, mean encoder
    "mean-sampled": dict(**SAMPLED),
    "mean-full": dict(**FULL),
    "mean-full-b1024": dict(**FULL, batch_size=1024),
    "mean-full-t0.1": dict(**FULL, temperature=0.1),
    "mean-full-t0.02": dict(**FULL, temperature=0.02),
    "mean-full-lr1e-3": dict(**FULL, lr=1e-3),
    "mean-full-h50": dict(**FULL, history_len=50),
    "mean-full-nocontent": dict(**FULL, use_content=False),
    "mean-full-drop0.3": dict(**FULL, dropout=0.3),
    # encoders
    "attention-full": dict(**FULL, encoder="attention"),
    "transformer-sampled": dict(**TRANSFORMER, **SAMPLED, history_len=50, dropout=0.2),
    "transformer-full-h50": dict(**TRANSFORMER, **FULL, history_len=50, dropout=0.2),
    "transformer-full-h50-d0.1": dict(**TRANSFORMER, **FULL, history_len=50),
    "transformer-full-h200": dict(**{**TRANSFORMER, "window_stride": 50}, **FULL, history_len=200, dropout=0.2),
    "transformer-full-h50-t0.1": dict(**TRANSFORMER, **FULL, history_len=50, dropout=0.2, temperature=0.1),
    "transformer-full-h50-lr1e-3": dict(**TRANSFORMER, **FULL, history_len=50, dropout=0.2, lr=1e-3),
    # the anchors' recipe (Klenitskiy & Vasilev 2023): cross-entropy over the catalog, every
    # position a target, dropout 0.1, early stopping with more patience than the default's 3
    "transformer-ce": dict(**TRANSFORMER, **FULL, history_len=50, patience=5, epochs=50),
    "mean-full-p5": dict(**FULL, patience=5, epochs=50),
    # the sampled default's temperature and history length at the catalog's width
    "mean-t0.035": dict(temperature=0.035),
    "mean-t0.07": dict(temperature=0.07),
    "mean-h50": dict(history_len=50),
    "mean-id64": dict(id_dim=64),  # each of the two id hashes 64 wide instead of 32
    # the trained weights themselves, not their moving average (the default before ema_decay 0.999)
    "mean-no-ema": dict(ema_decay=0.0),
    "mean-p5": dict(patience=5, epochs=50),  # the average lags: more checks before stopping
    # the average smooths a step's noise: a larger step, or an average over more steps
    "mean-lr5e-3": dict(lr=5e-3),
    "mean-ema0.9995": dict(ema_decay=0.9995),
}


def run(workdir: Path, name: str, seed: int, cache: dict) -> dict:
    tower_kw, train_kw = by_config(CONFIGS[name], TowerConfig, TrainConfig)
    history = tower_kw.pop("history_len", TowerConfig.history_len)
    if history not in cache:
        cache[history] = build_data(workdir, history)
    data = cache[history]
    tower = tower_config_for(data.shape, history_len=history, **tower_kw)
    # budgets in epochs: every valid user once per epoch, no time budget
    cfg = TrainConfig(seed=seed, valid_users=0, valid_every=0, max_minutes=0.0, **train_kw)
    t0 = time.perf_counter()

    def on_epoch(check: int, row: dict) -> None:  # the valid curve as it comes (runs are long)
        print(
            f"# {name} seed {seed} epoch {row['epoch']:g}: loss {row['loss']:.4f}, valid NDCG@10 "
            f"{row.get('valid_ndcg@10', float('nan')):.4f}",
            flush=True,
        )

    res = train(data.catalog, data.train, tower, cfg, valid=data.valid, log=lambda m: None, on_epoch=on_epoch)
    seconds = time.perf_counter() - t0
    valid = evaluate_model(res.model, data.catalog, data.valid, ks=(10,), coverage=False)
    test = evaluate_model(res.model, data.catalog, data.test, ks=(10,), coverage=False)
    return {
        "config": name,
        "seed": seed,
        "overrides": CONFIGS[name],
        "full_catalog": full_catalog(cfg, len(data.catalog)),
        "valid_ndcg@10": valid["ndcg@10"],
        "valid_hr@10": valid["hr@10"],
        "test_ndcg@10": test["ndcg@10"],
        "test_hr@10": test["hr@10"],
        "best_epoch": res.best_epoch,
        "epochs_run": round(res.epochs, 2),
        "stopped_by": res.stopped_by,
        "seconds": round(seconds, 1),
        "valid_curve": [round(h.get("valid_ndcg@10", float("nan")), 4) for h in res.history],
    }


def cost(sizes: list[int], steps: int, full_up_to: int, configs: list[str]) -> None:
    """Seconds per training step, full-catalog vs sampled, on random catalogs (one thread), for
    each named configuration (its tower and optimiser overrides; the loss is set by the column)."""
    from models.retrieval.data import Catalog, TrainSet
    from models.retrieval.towers import TwoTower
    from models.retrieval.training import _log_q, make_optimizers, optimizer_step, train_step

    users, rows, L, H = 10_000, 50_000, TowerConfig.history_len, 8
    g = torch.Generator().manual_seed(0)
    print(f"\n{'items':>10} {'config':>16} {'loss':>8} {'s/step':>8} {'examples/s':>11}")
    for n in sizes:
        catalog = Catalog(
            np.arange(n).astype(str).astype(object),
            torch.randint(1, 2 * n, (n + 1, 2), generator=g),
            torch.randint(0, 20, (n + 1, 4), generator=g),
            torch.randint(0, 5_000, (n + 1, 8), generator=g),
            torch.rand(n + 1, 2, generator=g),
        )
        data = TrainSet(
            np.arange(users).astype(str).astype(object),
            torch.randint(1, 2 * users, (users, 2), generator=g),
            torch.randint(0, users, (rows,), generator=g),
            torch.randint(0, n, (rows,), generator=g),
            torch.randint(-1, n, (rows, L), generator=g),
            torch.zeros(rows, dtype=torch.long),
            torch.randint(-1, n, (users, H), generator=g),
            torch.ones(n, dtype=torch.long),
        )
        for config, (name, threshold) in ((c, lt) for c in configs for lt in (("full", n), ("sampled", 0))):
            if name == "full" and n > full_up_to:
                print(f"{n:>10,} {config:>16} {name:>8} {'(skipped: above --cost-full-up-to)':>20}")
                continue
            tower_kw, train_kw = by_config(
                {k: v for k, v in CONFIGS[config].items() if k != "full_catalog_items"}, TowerConfig, TrainConfig
            )
            tower = tower_config_for(WarehouseShape(n, users, 20, 5_000), **tower_kw)  # sized as the graph sizes it
            cfg = TrainConfig(**{**train_kw, "full_catalog_items": threshold})
            model = TwoTower(tower)
            opts = make_optimizers(model, cfg)
            log_q = _log_q(data, n, cfg.batch_size, cfg.extra_negatives)
            times = []
            for _ in range(steps + 1):  # the first step warms up
                batch = torch.randint(0, rows, (cfg.batch_size,), generator=g)
                t0 = time.perf_counter()
                optimizer_step(model, opts, train_step(model, catalog, data, batch, cfg, log_q, g), cfg.clip_norm)
                times.append(time.perf_counter() - t0)
            sec = float(np.median(times[1:]))
            print(f"{n:>10,} {config:>16} {name:>8} {sec:>8.3f} {cfg.batch_size / sec:>11,.0f}", flush=True)
    print("(median of the steps after the first; a shared, loaded 2-core machine, one torch thread)")


def report(rows: list[dict]) -> None:
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["config"], []).append(r)
    print(
        f"\n{'config':<30} {'seeds':>5} {'valid NDCG@10':>17} {'test NDCG@10':>17} {'test HR@10':>17}"
        f" {'best ep':>8} {'epochs':>7} {'s/run':>6}"
    )
    for name, rs in sorted(by.items(), key=lambda kv: -np.mean([r["valid_ndcg@10"] for r in kv[1]])):
        print(
            f"{name:<30} {len(rs):>5} {spread([r['valid_ndcg@10'] for r in rs]):>17}"
            f" {spread([r['test_ndcg@10'] for r in rs]):>17} {spread([r['test_hr@10'] for r in rs]):>17}"
            f" {np.mean([r['best_epoch'] for r in rs]):>8.1f} {np.mean([r['epochs_run'] for r in rs]):>7.1f}"
            f" {np.mean([r['seconds'] for r in rs]):>6.0f}"
        )
    print("(seconds on a shared 2-core machine, one torch thread: not comparable between runs)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, help="holds (or receives) the MovieLens warehouse")
    ap.add_argument("--configs", default="mean-sampled,mean-full")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--out", type=Path, default=None, help="JSON lines, appended (default: WORKDIR/sweep.jsonl)")
    ap.add_argument("--report", action="store_true", help="print the table of --out and exit")
    ap.add_argument("--list", action="store_true", help="print the configurations and exit")
    ap.add_argument("--cost", default="", help="catalog sizes to time training steps at, comma-separated")
    ap.add_argument("--cost-steps", type=int, default=5)
    ap.add_argument("--cost-full-up-to", type=int, default=1_000_000, help="time full-catalog steps up to this size")
    ap.add_argument("--cost-configs", default="default", help="configurations to time, comma-separated")
    args = ap.parse_args(argv)
    if args.cost:
        torch.set_num_threads(1)
        cost(
            [int(n) for n in args.cost.split(",")], args.cost_steps, args.cost_full_up_to, args.cost_configs.split(",")
        )
        return 0
    if args.list:
        for name, kw in CONFIGS.items():
            print(f"{name:<30} {kw}")
        return 0
    out = args.out or args.workdir / "sweep.jsonl"
    if not args.report:
        torch.set_num_threads(1)
        args.workdir.mkdir(parents=True, exist_ok=True)
        cache: dict = {}
        for name in args.configs.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                row = run(args.workdir, name, seed, cache)
                print(json.dumps(row), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    report([json.loads(line) for line in out.read_text().splitlines() if line.strip()])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
