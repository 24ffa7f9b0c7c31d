"""SASRec from rectools, run by the benchmarks in a Python that has rectools (rectools 0.19 pins
pandas 2 / numpy 1, so it cannot share towerflow's environment: it runs as its own process, only
exchanges Parquet files and imports nothing from towerflow). Build that Python once with
`make peers` (README, "Benchmarks").

    python benchmarks/_sasrec_peer.py DIR --seed 0 [--epochs 30 | --max-epochs 200] [--k 50]

DIR holds train.parquet, valid.parquet (user_id, item_id, ts) and users_valid.parquet /
users_test.parquet (user_id). Fit on train -> top-k for the valid users; refit on train + valid
-> top-k for the test users (the ALS/BPR protocol of bench_quality_movielens.py), seen items
filtered; writes reco_valid.parquet / reco_test.parquet (user_id, item_id, rank), seconds.json
and info.json. --k 0 ranks every item the model knows (full ranking, for the caller's metric code).

Epochs: --epochs N trains exactly N. --max-epochs M with valid_targets.parquet (user_id, item_id)
in DIR early-stops as Klenitskiy & Vasilev (RecSys 2023) do: every --check-every epochs the valid
users' NDCG@10 (full ranking, seen items filtered; the mean over target pairs, only to pick the
epoch: the caller computes the reported metrics) is measured, training stops after --patience
checks without a better one, and the test refit trains the best check's epoch count from the
same seed; with --no-refit the best check's model ranks test reading train + valid instead (the
two-tower's protocol: no retraining, the history grows).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=30, help="exact epochs (when --max-epochs is 0)")
    ap.add_argument("--max-epochs", type=int, default=0, help="early stopping on valid NDCG@10 up to this many")
    ap.add_argument("--check-every", type=int, default=5)
    ap.add_argument("--patience", type=int, default=3, help="checks without a better valid NDCG@10")
    ap.add_argument("--k", type=int, default=50, help="list length (0 = every item the model knows)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument(
        "--no-refit",
        action="store_true",
        help="with --max-epochs: rank test with the best check's model reading train + valid, no refit",
    )
    args = ap.parse_args()
    import torch
    from lightning_fabric import seed_everything
    from pytorch_lightning import Trainer
    from rectools import Columns
    from rectools.dataset import Dataset
    from rectools.models import SASRecModel

    torch.set_num_threads(args.threads)
    d = args.dir
    train, valid = pd.read_parquet(d / "train.parquet"), pd.read_parquet(d / "valid.parquet")
    early = args.max_epochs > 0
    if early and not (d / "valid_targets.parquet").exists():
        raise SystemExit(f"--max-epochs needs {d / 'valid_targets.parquet'} (user_id, item_id) to stop on")

    def frame(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {
                Columns.User: df["user_id"],
                Columns.Item: df["item_id"],
                Columns.Weight: 1.0,
                Columns.Datetime: pd.to_datetime(df["ts"]),
            }
        )

    def trainer(epochs: int):
        return lambda: Trainer(
            max_epochs=epochs,
            min_epochs=epochs,
            deterministic=True,
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            enable_checkpointing=False,
            accelerator="cpu",
            devices=1,
        )

    def model(epochs: int) -> SASRecModel:
        return SASRecModel(
            n_blocks=args.blocks,
            n_heads=args.heads,
            n_factors=args.factors,
            dropout_rate=args.dropout,
            session_max_len=args.max_len,
            loss="softmax",
            lr=args.lr,
            batch_size=args.batch,
            epochs=epochs,
            verbose=0,
            deterministic=True,
            get_trainer_func=trainer(epochs),
        )

    def recommend(m: SASRecModel, ds: Dataset, split: str) -> pd.DataFrame:
        users = pd.read_parquet(d / f"users_{split}.parquet")["user_id"]
        k = args.k or ds.item_id_map.size
        reco = m.recommend(users=users, dataset=ds, k=k, filter_viewed=True)
        return reco.rename(columns={Columns.User: "user_id", Columns.Item: "item_id", Columns.Rank: "rank"})[
            ["user_id", "item_id", "rank"]
        ]

    def valid_ndcg(reco: pd.DataFrame, targets: pd.DataFrame) -> float:
        hit = targets.merge(reco[reco["rank"] <= 10], on=["user_id", "item_id"], how="left")
        return float(np.where(hit["rank"].notna(), 1.0 / np.log2(hit["rank"].fillna(1) + 1), 0.0).mean())

    seconds, info = {}, {"curve": []}
    ds_valid = Dataset.construct(frame(train))
    ds_test = Dataset.construct(frame(pd.concat([train, valid])))
    seed_everything(args.seed, workers=True)
    t0 = time.perf_counter()
    if early:
        targets = pd.read_parquet(d / "valid_targets.parquet")[["user_id", "item_id"]]
        m, best, best_epoch, since, epoch = model(args.check_every), -1.0, 0, 0, 0
        best_reco = best_test = None
        while epoch < args.max_epochs and since < args.patience:
            step = min(args.check_every, args.max_epochs - epoch)
            m.fit_partial(ds_valid, min_epochs=step, max_epochs=step)
            epoch += step
            reco = recommend(m, ds_valid, "valid")
            score = valid_ndcg(reco, targets)
            info["curve"].append([epoch, round(score, 5)])
            print(f"# sasrec seed {args.seed}: epoch {epoch} valid NDCG@10 {score:.4f}", flush=True)
            if score > best:
                best, best_epoch, since, best_reco = score, epoch, 0, reco
                if args.no_refit:  # the history grows by valid; unknown items are dropped from it
                    best_test = recommend(m, ds_test, "test")
            else:
                since += 1
        info["best_epoch"] = best_epoch
        info["stopped_by"] = "early_stopping" if since >= args.patience else "max_epochs"
        best_reco.to_parquet(d / "reco_valid.parquet")
        test_epochs = best_epoch
    else:
        m = model(args.epochs)
        m.fit(ds_valid)
        recommend(m, ds_valid, "valid").to_parquet(d / "reco_valid.parquet")
        test_epochs = args.epochs
    seconds["valid"] = time.perf_counter() - t0
    if early and args.no_refit:
        best_test.to_parquet(d / "reco_test.parquet")
        info["test_epochs"] = 0
    else:
        seed_everything(args.seed, workers=True)
        t0 = time.perf_counter()
        m = model(test_epochs)
        m.fit(ds_test)
        seconds["test"] = time.perf_counter() - t0
        recommend(m, ds_test, "test").to_parquet(d / "reco_test.parquet")
        info["test_epochs"] = test_epochs
    (d / "seconds.json").write_text(json.dumps(seconds))
    (d / "info.json").write_text(json.dumps({**info, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
