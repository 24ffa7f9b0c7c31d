"""How the graph runs the generative stage, beyond the tokenizer (TokenizerConfig), the
retriever (Seq2SeqConfig) and its training (GenTrainConfig): when to train a new tokenizer, the
time budget of a scheduled training, and how the evaluation samples. The defaults live here
once; the Dagster configs (assets/generative/config.py) are derived from them.

Product defaults follow TIGER (3 x 256 codes, 200 RQ-VAE epochs, d_model 128, 4+4 layers, FFN
512, beam 20); `make demo` passes a smaller run (Makefile GENERATIVE_DEMO)."""

from __future__ import annotations

from dataclasses import dataclass

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
class GenerativeRun:
    # the graph bounds a training that the library (GenTrainConfig: 0 = none) leaves unbounded
    max_minutes: float = setting(10.0, "Training time budget (0 = none); the best weights so far are kept.")


@dataclass
class GenerativeEvaluationSettings:
    eval_users: int = setting(
        0,
        "Decode a seeded sample of this many valid / test users (0 = "
        "all of them, the same users as model_evaluation; the demo decodes a sample).",
    )
    beam: int = setting(0, "Beam width (0 = the one the retriever was validated with).")
    seed: int = setting(0, "Seed of the user sample.")
