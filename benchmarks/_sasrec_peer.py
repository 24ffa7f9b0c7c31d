"""SASRec from rectools, run by bench_generative.py in the Python that has rectools (it may need
other pandas/numpy versions than towerflow's, so it runs as its own process and only exchanges
Parquet files; it imports nothing from towerflow).

    python benchmarks/_sasrec_peer.py DIR --seed 0 [--epochs 30] [--k 50] [--threads 1]

DIR holds train.parquet, valid.parquet (user_id, item_id, ts) and users_valid.parquet /
users_test.parquet (user_id). Fit on train -> top-k for the valid users; refit on train + valid
-> top-k for the test users (the protocol bench_quality_movielens.py uses for ALS/BPR), seen
items filtered; writes reco_valid.parquet / reco_test.parquet (user_id, item_id, rank) and
seconds.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-len", type=int, default=50)
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
    seconds = {}

    def frame(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {
                Columns.User: df["user_id"],
                Columns.Item: df["item_id"],
                Columns.Weight: 1.0,
                Columns.Datetime: pd.to_datetime(df["ts"]),
            }
        )

    def trainer():
        return Trainer(
            max_epochs=args.epochs,
            min_epochs=args.epochs,
            deterministic=True,
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            enable_checkpointing=False,
            accelerator="cpu",
            devices=1,
        )

    for split, events in (("valid", train), ("test", pd.concat([train, valid]))):
        seed_everything(args.seed, workers=True)
        ds = Dataset.construct(frame(events))
        model = SASRecModel(
            n_blocks=2,
            n_heads=2,
            n_factors=64,
            session_max_len=args.max_len,
            loss="softmax",
            epochs=args.epochs,
            verbose=0,
            deterministic=True,
            get_trainer_func=trainer,
        )
        t0 = time.perf_counter()
        model.fit(ds)
        seconds[split] = time.perf_counter() - t0
        users = pd.read_parquet(d / f"users_{split}.parquet")["user_id"]
        reco = model.recommend(users=users, dataset=ds, k=args.k, filter_viewed=True)
        reco.rename(columns={Columns.User: "user_id", Columns.Item: "item_id", Columns.Rank: "rank"})[
            ["user_id", "item_id", "rank"]
        ].to_parquet(d / f"reco_{split}.parquet")
    (d / "seconds.json").write_text(json.dumps(seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
