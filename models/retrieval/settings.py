"""How the graph runs the two-tower stage, beyond the model (TowerConfig) and the optimisation
(TrainConfig): how the id tables are sized, resuming, how many processes train, and how many
items a batch recommendation keeps. The defaults live here once; the Dagster configs
(assets/training/config.py, assets/serving/config.py) are derived from them."""

from __future__ import annotations

from dataclasses import dataclass

from models.settings import setting


@dataclass
class TrainingRun:
    item_buckets: int = setting(
        0, "Item-id hash table rows; 0 = 2x the catalog size (two hashes make a full collision rare)."
    )
    user_buckets: int = setting(0, "User-id hash table rows; 0 = 2x the user count.")
    resume: bool = setting(False, "Start from the latest checkpoint trained on the same vocabulary.")
    workers: int = setting(
        1,
        "Training processes (PyTorch DDP ranks, launched with torchrun "
        "through Dagster Pipes when above 1), each with cores / workers threads and a share of "
        "every batch: the global batch stays batch_size, so results match one worker within "
        "noise. One worker trains in the Dagster process; on 2 cores it is fastest at "
        "batch_size 256 and 2 workers win from about 4,096 (README, bench_distributed).",
        ge=1,
    )
    nodes: int = setting(
        1,
        "torchrun agents the workers are split over (workers / nodes ranks each), meeting at a "
        "rendezvous on 127.0.0.1: the multi-node path run on one machine, where it trains to the "
        "same weights as one node (a test); on a cluster each node is a pod running the same "
        "command (models.retrieval.distributed.torchrun_command).",
        ge=1,
    )


@dataclass
class EvaluationRun:
    eval_users: int = setting(
        10_000,
        "model_evaluation ranks the whole catalog for a seeded sample of this many valid and "
        "this many test users (0 = all of them). Every user is ranked when there are fewer (the "
        "demo, MovieLens). 10,000 users put NDCG@10's 95% interval within about +-0.006; at 10M "
        "events / 1M items ranking all 97,725 + 97,725 took 1,002 s.",
        ge=0,
    )
    seed: int = setting(0, "Seed of the user sample and of the bootstrap resamples.")
    resamples: int = setting(
        1000, "Bootstrap resamples of the evaluated users for the 95% intervals the promotion check compares.", ge=100
    )


@dataclass
class RecommendationSettings:
    k: int = setting(100, "Recommendations per user, seen items excluded.")
