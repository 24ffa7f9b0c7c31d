"""The generative group's Dagster configs, derived from the library's dataclasses: the tokenizer
(TokenizerConfig), the retriever (Seq2SeqConfig), its training (GenTrainConfig) and how the group
runs them (models/generative/settings.py). Back to the library: `to_library(config,
TokenizerConfig)`, `to_library(config, Seq2SeqConfig, codebook_size=..., collision_size=...)`,
`to_library(config, GenTrainConfig)`."""

import dagster as dg

from assets._config import config_from, without
from models.generative.semantic_ids import TokenizerConfig
from models.generative.seq2seq import Seq2SeqConfig
from models.generative.settings import GenerativeEvaluationSettings, SemanticIdRun
from models.generative.training import GenTrainConfig

SemanticIdConfig: type[dg.Config] = config_from(
    "SemanticIdConfig",
    without(
        TokenizerConfig,
        levels="always 3 (3 quantised codes + the collision token)",
        batch_size="an RQ-VAE training constant the product keeps fixed",
        kmeans_iters="a k-means constant the product keeps fixed",
        kmeans_max_points="a k-means memory bound",
    ),
    SemanticIdRun,
    doc="Product defaults (3 x 256 residual k-means codes; kind rqvae for TIGER's RQ-VAE, which ETEGRec "
    "mode needs, at most 200 epochs under a budget of 2M item vectors); `make demo` passes a smaller run "
    "(Makefile DEMO_CONFIG) so the generative group stays within its share of the demo.",
)
GenerativeConfig: type[dg.Config] = config_from(
    "GenerativeConfig",
    without(
        Seq2SeqConfig,
        codebook_size="the tokenizer's, read from item_semantic_ids",
        collision_size="the tokenizer's, sized from the data, read from item_semantic_ids",
    ),
    without(
        GenTrainConfig,
        weight_decay="an optimiser constant the product keeps fixed",
        clip_norm="an optimiser constant the product keeps fixed",
        max_steps="tests and smoke runs",
        align_temperature="an ETEGRec constant the product keeps fixed",
    ),
    doc="The seq2seq retriever. Product defaults: d_model 64, 2+2 layers, FFN 256, no dropout, "
    "history 20, a causal encoder trained on windows every 5 rows, beam 20, a work budget of "
    "1.5M training rows with early stopping on valid "
    "NDCG@10 (wall-clock only when asked: max_minutes); `make demo` passes a small model and a "
    "few epochs (Makefile DEMO_CONFIG).",
)
GenerativeEvaluationConfig: type[dg.Config] = config_from("GenerativeEvaluationConfig", GenerativeEvaluationSettings)
