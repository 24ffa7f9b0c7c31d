"""How the graph runs the generative stage, beyond the tokenizer (TokenizerConfig), the
retriever (Seq2SeqConfig) and its training (GenTrainConfig, which holds the work budget): when to
train a new tokenizer and how the evaluation samples. The defaults live here
once; the Dagster configs (assets/generative/config.py) are derived from them.

Product defaults: residual k-means codes (3 x 256, no training; TIGER's RQ-VAE is `kind: rqvae`,
at most 200 epochs under a budget of 2M item vectors) and beam 20, a retriever sized for the
graph's budget (d_model 64, 2+2 layers, FFN 256, no dropout, weight decay 0.1, history 20, a
causal encoder trained on windows of a user's positives) trained under a work budget
(GenTrainConfig.max_examples) with early stopping; `make demo` passes a smaller run (Makefile
GENERATIVE_DEMO)."""

from __future__ import annotations

from dataclasses import dataclass

from models.retrieval.settings import EvaluationRun
from models.settings import setting


@dataclass
class SemanticIdRun:
    retrain: bool = setting(
        False,
        "Train a new tokenizer even when the item vectors come from "
        "the same two-tower model (otherwise only items without a code are encoded, with the "
        "trained tokenizer: codes stay stable for the trained retriever). Changing the tokenizer "
        "fields takes effect with a new two-tower model or with retrain.",
    )


@dataclass
class GenerativeEvaluationSettings:
    eval_users: int = setting(
        EvaluationRun.eval_users,  # model_evaluation's: the same seeded users, so the figures compare
        "Decode a seeded sample of this many valid / test users (0 = all of them); every user when "
        "there are fewer (MovieLens; the demo decodes a smaller sample). Beam search costs per user, "
        "so at 100k users decoding all of them would be the group's longest step.",
        ge=0,
    )
    beam: int = setting(0, "Beam width (0 = the one the retriever was validated with).")
    seed: int = setting(0, "Seed of the user sample.")
