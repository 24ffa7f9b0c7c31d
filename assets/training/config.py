"""The training group's Dagster config, derived from the library's dataclasses: the towers
(TowerConfig), the optimisation (TrainConfig) and how the asset runs it (TrainingRun). Back to
the library: `tower_config_for(shape, **fields_for(config, TowerConfig))` and
`to_library(config, TrainConfig)`."""

import dagster as dg

from assets._config import config_from, without
from models.retrieval.settings import EvaluationRun, TrainingRun
from models.retrieval.towers import TowerConfig
from models.retrieval.training import TrainConfig

TrainingConfig: type[dg.Config] = config_from(
    "TrainingConfig",
    without(
        TowerConfig,
        id_dim="a model-size choice the product keeps fixed",
        n_hashes="two hashes (Phoenix): the id tables are sized for it",
        item_buckets="TrainingRun.item_buckets: 0 sizes the table from the warehouse",
        user_buckets="TrainingRun.user_buckets: 0 sizes the table from the warehouse",
        n_categories="read from the vocabularies (WarehouseShape)",
        n_tokens="read from the vocabularies (WarehouseShape)",
        n_numeric="the item features the warehouse has (year, has_year)",
        heads="a model-size choice the product keeps fixed",
        layers="a model-size choice the product keeps fixed",
        dropout="a model-size choice the product keeps fixed",
        sparse="SparseAdam for the id tables: what makes a step cheap at 1M items",
    ),
    without(
        TrainConfig,
        weight_decay="an optimiser constant the product keeps fixed",
        clip_norm="an optimiser constant the product keeps fixed",
        max_positions="a memory bound of the transformer's (P, P) softmax",
        max_steps="tests and smoke runs",
        refit="the quality benchmark's row: on MovieLens neither refit lifted test NDCG@10 (README)",
        refit_epochs="the quality benchmark's row, with refit",
    ),
    TrainingRun,
)

ModelEvaluationConfig: type[dg.Config] = config_from(
    "ModelEvaluationConfig",
    EvaluationRun,
    doc="How many users model_evaluation ranks (a seeded sample at scale; every one on small data) "
    "and how the 95% intervals the promotion check compares are drawn.",
)
