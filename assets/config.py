"""Typed configuration for each stage: defaults a recommender engineer can argue with.

Every field says why it exists. The same objects feed the SQL as bound parameters
(`.sql_params()`), so the Dagster UI's launchpad, tests and benchmarks share one set of rules.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg
from pydantic import Field

from models.index.item_index import IndexSpec
from models.retrieval.towers import TowerConfig
from models.retrieval.training import TrainConfig

# One source of truth per default: the library dataclasses in models/ hold them, these configs
# read them (tests/test_config_defaults.py fails when a literal creeps back in here).
_TRAIN, _TOWER, _INDEX = TrainConfig(), TowerConfig(), IndexSpec()

KNOWN_EVENT_TYPES = [
    "impression",
    "view",
    "click",
    "like",
    "share",
    "rating",
    "purchase",
    "add_to_cart",
    "play",
    "not_interested",
    "dislike",
]


class CleaningConfig(dg.Config):
    event_types: list[str] = Field(
        default=KNOWN_EVENT_TYPES,
        description="Event types accepted as valid; any other type is quarantined as unknown_event_type.",
    )
    negative_types: list[str] = Field(
        default=["not_interested", "dislike"],
        description="Explicit negative feedback: never a positive, kept as hard-negative signal.",
    )
    neutral_types: list[str] = Field(
        default=["impression"], description="Exposure without engagement: neither positive nor negative."
    )
    rating_types: list[str] = Field(
        default=["rating"], description="Event types whose value is a rating that must lie in range."
    )
    rating_min: float = Field(default=0.5, description="Lowest valid rating (MovieLens half stars start at 0.5).")
    rating_max: float = Field(
        default=5.0, description="Highest valid rating: a 5-star scale; raise it for 10-point scales."
    )
    min_positive_rating: float = Field(
        default=0.0,
        description="A rating counts as positive at or above this value (0 = every rating is a "
        "positive, the usual implicit-feedback reading of MovieLens); below it, negative.",
    )
    max_id_length: int = Field(default=128, description="Longer ids are quarantined as oversized_id.")
    max_text_length: int = Field(default=2000, description="Longer item titles are quarantined.")
    min_timestamp: str = Field(
        default="1995-01-01", description="Earlier events are implausible (clock errors, epoch 0)."
    )
    max_future_days: float = Field(default=1.0, description="Events later than now + this many days are implausible.")

    def positive_types(self) -> list[str]:
        excluded = set(self.negative_types) | set(self.neutral_types)
        return [t for t in self.event_types if t not in excluded]

    def sql_params(self, now: datetime | None = None) -> dict:
        now = now or datetime.now(timezone.utc)
        return {
            "event_types": [t.lower() for t in self.event_types],
            "positive_types": self.positive_types(),
            "negative_types": list(self.negative_types),
            "rating_types": list(self.rating_types),
            "rating_min": self.rating_min,
            "rating_max": self.rating_max,
            "min_positive_rating": self.min_positive_rating,
            "max_id_length": self.max_id_length,
            "max_text_length": self.max_text_length,
            "min_timestamp": datetime.fromisoformat(self.min_timestamp),
            "max_timestamp": (now + timedelta(days=self.max_future_days)).replace(tzinfo=None),
        }


class SplitConfig(dg.Config):
    strategy: str = Field(
        default="leave_last_out",
        description="leave_last_out (per user: last positive -> test, second last -> valid) or "
        "global_time (one time cut for everyone, closer to production).",
    )
    min_user_positives: int = Field(
        default=3, description="leave_last_out: users with fewer positive pairs stay in train only."
    )
    valid_start: str | None = Field(
        default=None, description="global_time: first valid timestamp (default: 0.8 quantile)."
    )
    test_start: str | None = Field(
        default=None, description="global_time: first test timestamp (default: 0.9 quantile)."
    )

    def sql_params(self) -> dict:
        if self.strategy not in ("leave_last_out", "global_time"):
            raise ValueError(f"split strategy must be leave_last_out or global_time, got {self.strategy!r}")
        return {
            "strategy": self.strategy,
            "min_user_positives": self.min_user_positives,
            "valid_start": self.valid_start,
            "test_start": self.test_start,
        }


class VocabularyConfig(dg.Config):
    num_buckets: int = Field(
        default=64,
        description="Hash buckets (indices 1..n) that unseen or rare keys share, so a "
        "new id still gets a trained embedding instead of padding.",
    )
    min_count_ids: int = Field(
        default=1,
        description="A user/item id needs this many train pairs to get its own index; an item "
        "id below it counts as never trained and is embedded by content alone.",
    )
    min_count_features: int = Field(
        default=2, description="A category / title token needs this many train interactions."
    )

    def sql_params(self) -> dict:
        return {
            "num_buckets": self.num_buckets,
            "min_count_ids": self.min_count_ids,
            "min_count_features": self.min_count_features,
        }


class GxConfig(dg.Config):
    max_rows: int = Field(
        default=200_000,
        description="Great Expectations validates the whole table up to this size and a seeded "
        "sample above it; whole-table invariants are SQL audits either way.",
    )
    seed: int = Field(default=0, description="Sample seed, so a failing sample can be reproduced.")


class TrainingConfig(dg.Config):
    encoder: str = Field(
        default=_TOWER.encoder,
        description="User encoder over the last positives: mean, "
        "attention (multi-head pooling) or transformer (causal, SASRec-style, every position).",
    )
    dim: int = Field(default=_TOWER.dim, description="Output vector size of both towers (the index dimension).")
    hidden: int = Field(default=_TOWER.hidden, description="Internal width of the towers.")
    history_len: int = Field(default=_TOWER.history_len, description="How many recent positives the user tower reads.")
    recency: bool = Field(
        default=_TOWER.recency,
        description="mean/attention: learn a weight (mean) or vector "
        "(attention) per history position, so recent items can count more (MovieLens, "
        "mean encoder, 3 seeds: test NDCG@10 0.052 -> 0.068).",
    )
    item_buckets: int = Field(
        default=0,
        description="Item-id hash table rows; 0 = 2x the catalog size (two hashes make a full collision rare).",
    )
    user_buckets: int = Field(default=0, description="User-id hash table rows; 0 = 2x the user count.")
    id_dropout: float = Field(
        default=_TOWER.id_dropout,
        description="Share of items trained without their id, so content alone embeds a brand-new item.",
    )
    use_content: bool = Field(
        default=_TOWER.use_content, description="Categories, title tokens and year in the item tower."
    )
    content_alignment: float = Field(
        default=_TRAIN.content_alignment,
        ge=0.0,
        description="Weight of a loss pulling each trained item's content-only vector (id part zero) toward "
        "its full vector: an item id never trained is embedded by content alone, and this puts it "
        "near the trained items with the same content (0 = off; benchmarks/bench_cold_items.py).",
    )
    loss: str = Field(default=_TRAIN.loss, description="infonce (sampled softmax) or bpr (comparison).")
    temperature: float = Field(default=_TRAIN.temperature, description="Softmax temperature over cosine scores.")
    logq_correction: bool = Field(
        default=_TRAIN.logq_correction, description="Correct in-batch negatives for popularity."
    )
    extra_negatives: int = Field(
        default=_TRAIN.extra_negatives,
        description="Uniform negatives shared by the batch (mixed "
        "negatives; Phoenix uses 64, 512 scored better on MovieLens full ranking).",
    )
    hard_negatives: bool = Field(
        default=_TRAIN.hard_negatives, description="The user's negative feedback as hard negatives."
    )
    batch_size: int = Field(default=_TRAIN.batch_size, description="Training rows per step.")
    epochs: int = Field(
        default=_TRAIN.epochs, description="Upper bound; early stopping on valid NDCG@10 usually ends sooner."
    )
    patience: int = Field(default=_TRAIN.patience, description="Epochs without a better valid NDCG@10 before stopping.")
    valid_users: int = Field(
        default=_TRAIN.valid_users,
        description="Early stopping ranks the whole catalog for a seeded "
        "sample of this many validation users (0 = all): at 1M items ranking all ~100k took "
        "20+ minutes a check; model_evaluation still ranks every evaluation user.",
    )
    valid_every: int = Field(
        default=_TRAIN.valid_every,
        description="Training examples between validation checks (0 = "
        "once per epoch); patience counts checks. Small data validates once per epoch; at "
        "10M events an epoch is 2.6M examples (~6 min on 2 cores), too coarse to stop on.",
    )
    max_minutes: float = Field(
        default=_TRAIN.max_minutes,
        description="Training time budget (0 = none): training stops there "
        "and keeps the best weights, so a scheduled retrain ends in bounded time. The "
        "demo trains in seconds; 10M events / 1M items reach it (benchmarks/bench_scale.py).",
    )
    lr: float = Field(default=_TRAIN.lr, description="AdamW / SparseAdam learning rate.")
    seed: int = Field(
        default=_TRAIN.seed, description="Seeds torch and NumPy: the same data and seed give the same model."
    )
    window_stride: int = Field(
        default=_TRAIN.window_stride,
        description="transformer: rows between training windows (overlapping windows give more steps per epoch).",
    )
    resume: bool = Field(default=False, description="Start from the latest checkpoint trained on the same vocabulary.")
    workers: int = Field(
        default=1,
        ge=1,
        description="Training processes (PyTorch DDP ranks, launched with torchrun "
        "through Dagster Pipes when above 1), each with cores / workers threads and a share of "
        "every batch: the global batch stays batch_size, so results match one worker within "
        "noise. One worker trains in the Dagster process; on 2 cores it is fastest at "
        "batch_size 256 and 2 workers win from about 4,096 (README, bench_distributed).",
    )


class IndexConfig(dg.Config):
    kind: str = Field(
        default=_INDEX.kind,
        description="auto (exact Flat up to exact_max items, IVF above: HNSW "
        "recalled poorly on trained user vectors), flat, hnsw or ivf.",
    )
    exact_max: int = Field(default=_INDEX.exact_max, description="auto: exact search up to this many items.")
    hnsw_m: int = Field(default=_INDEX.hnsw_m, description="HNSW graph degree.")
    ef_search: int = Field(default=_INDEX.ef_search, description="HNSW search breadth: recall vs speed.")
    nprobe: int = Field(
        default=_INDEX.nprobe,
        description="IVF cells visited per query when the build is not tuned "
        "(tune=false, or no user to tune on); tuning replaces it.",
    )
    tune: bool = Field(
        default=True,
        description="Every ANN build picks the cheapest nprobe / efSearch whose "
        "recall@10 on real user vectors reaches recall_threshold + tune_margin (FAISS "
        "ParameterSpace), records it in the manifest and serves with it.",
    )
    tune_sample: int = Field(
        default=1000,
        description="User vectors the tuning measures recall on (other "
        "users than the recall check's, so the check stays an independent measurement).",
    )
    tune_margin: float = Field(
        default=0.01,
        description="Tune to this much above recall_threshold, so the "
        "blocking check on other users is not a coin flip at the threshold.",
    )
    recall_threshold: float = Field(
        default=0.95, description="Blocking check: recall@10 against exact search on real user vectors must reach this."
    )
    recall_sample: int = Field(default=2000, description="User vectors sampled for the recall check.")
    rebuild_share: float = Field(
        default=0.1,
        description="Rebuild instead of upserting once the delta "
        "segment plus the tombstoned main rows pass this share of the index.",
    )
    full: bool = Field(default=False, description="Rebuild even when an upsert would do.")

    def spec(self) -> IndexSpec:
        return IndexSpec(
            kind=self.kind, exact_max=self.exact_max, hnsw_m=self.hnsw_m, ef_search=self.ef_search, nprobe=self.nprobe
        )


class EmbeddingConfig(dg.Config):
    full: bool = Field(
        default=False,
        description="Re-embed every item even when the model is unchanged "
        "(otherwise only new or changed items are embedded).",
    )


class RecommendationConfig(dg.Config):
    k: int = Field(default=100, description="Recommendations per user, seen items excluded.")


def default_warehouse_params() -> dict:
    """The data half's SQL parameters at their defaults, as `models.warehouse.build_warehouse`
    takes them (tests and benchmarks build the warehouse without Dagster)."""
    return {
        "cleaning": CleaningConfig().sql_params(),
        "splits": SplitConfig().sql_params(),
        "vocabulary": VocabularyConfig().sql_params(),
    }


def _ranker_default(field: str):
    """A default of the ranking library's dataclasses (models/ranking): the one source of truth."""
    from dataclasses import fields

    from models.ranking.model import RankerConfig
    from models.ranking.training import RankerTrainConfig

    for cls in (RankerConfig, RankerTrainConfig):
        for f in fields(cls):
            if f.name == field:
                return f.default
    raise KeyError(field)


def _ranking_candidates_default() -> int:
    from models.ranking import DEFAULT_CANDIDATES

    return DEFAULT_CANDIDATES


class RankingConfig(dg.Config):
    """The ranking stage (assets/ranking/): action labels, candidates, the ranker and its use.

    `make demo` runs it smaller (Makefile RANKING_DEMO: 100 candidates, 4 epochs, 500 validation
    users) to stay near its time budget; these defaults are the product's."""

    action_set: str = Field(
        default="auto",
        description="Action vocabulary (models/ranking/labels.py): events "
        "(click, like, share, liked_rating, not_interested), ratings (MovieLens: rated, "
        "rated_4plus, rated_5, rated_low) or auto (ratings when every event is a rating).",
    )
    action_weights: dict[str, float] = Field(
        default={},
        description="Override an action's weight in the ranking "
        'score, e.g. {"not_interested": -20}; negative actions push down.',
    )
    n_candidates: int = Field(
        default=_ranking_candidates_default(),
        ge=1,
        description="Candidates the champion retriever hands the ranker "
        "per user (seen items excluded); evaluation compares both orders over these.",
    )
    label_share: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Train rows: the last share of each user's "
        "train pairs opens the label window; history and retrieval see only what came before.",
    )
    k: int = Field(
        default=RecommendationConfig.model_fields["k"].default,
        ge=1,
        description="ranked_recommendations: items kept per user after ranking.",
    )
    dim: int = Field(default=_ranker_default("dim"), description="Ranker token width.")
    layers: int = Field(default=_ranker_default("layers"), description="Transformer blocks.")
    heads: int = Field(default=_ranker_default("heads"), description="Attention heads (dim must divide).")
    history_len: int = Field(
        default=_ranker_default("history_len"),
        description="Latest exposures with an action the ranker reads (Phoenix: 128).",
    )
    candidates_per_pass: int = Field(
        default=_ranker_default("candidates_per_pass"),
        description="Candidate slots per sequence (Phoenix: 32); more candidates take more sequences.",
    )
    epochs: int = Field(
        default=_ranker_default("epochs"),
        description="Upper bound; early stopping on the valid NDCG@10 of the weighted score usually ends sooner.",
    )
    patience: int = Field(default=_ranker_default("patience"), description="Epochs without a better valid NDCG@10.")
    valid_users: int = Field(
        default=_ranker_default("valid_users"),
        description="Early stopping scores a seeded "
        "sample of this many valid users (0 = all); ranking_evaluation scores every one.",
    )
    batch_size: int = Field(default=_ranker_default("batch_size"), description="Users per step.")
    lr: float = Field(default=_ranker_default("lr"), description="AdamW learning rate.")
    max_minutes: float = Field(default=_ranker_default("max_minutes"), description="Training budget (0 = none).")
    seed: int = Field(default=_ranker_default("seed"), description="Seeds sampling and initialisation.")
    negative_offset: float = Field(
        default=1e-3,
        description="Phoenix's offset: a non-negative weighted score s "
        "becomes s + offset, a negative one a number in [0, offset) in the same order.",
    )


# ---- generative group: defaults come from the library dataclasses (one source of truth)


def _generative_defaults():
    from models.generative.semantic_ids import TokenizerConfig
    from models.generative.seq2seq import Seq2SeqConfig
    from models.generative.training import GenTrainConfig

    return TokenizerConfig(), Seq2SeqConfig(), GenTrainConfig()


_TOK, _S2S, _GEN = _generative_defaults()


class SemanticIdConfig(dg.Config):
    """Product defaults (3 x 256 codes, 200 RQ-VAE epochs); `make demo` passes a smaller run
    (Makefile DEMO_CONFIG) so the generative group stays within its share of the demo."""

    kind: str = Field(
        default=_TOK.kind, description="rqvae (RQ-VAE, TIGER) or rkmeans (residual k-means, no training: the baseline)."
    )
    codebook_size: int = Field(
        default=_TOK.codebook_size,
        description="Codes per level (3 levels); also how many "
        "items one 3-code prefix can hold (the collision token's range).",
    )
    code_dim: int = Field(default=_TOK.code_dim, description="rqvae: latent size of the codewords.")
    hidden: list[int] = Field(default=list(_TOK.hidden), description="rqvae: encoder MLP widths (decoder mirrored).")
    beta: float = Field(default=_TOK.beta, description="rqvae: commitment weight.")
    epochs: int = Field(
        default=_TOK.epochs,
        description="rqvae: passes over the item vectors (dead codes restart "
        "each epoch, so more epochs mean fewer collisions).",
    )
    lr: float = Field(default=_TOK.lr, description="rqvae: Adam learning rate.")
    seed: int = Field(default=_TOK.seed, description="Seeds k-means and the RQ-VAE.")
    retrain: bool = Field(
        default=False,
        description="Train a new tokenizer even when the item vectors come from "
        "the same two-tower model (otherwise only items without a code are encoded, with the "
        "trained tokenizer: codes stay stable for the trained retriever). Changing the fields "
        "above takes effect with a new two-tower model or with retrain.",
    )

    def tokenizer_config(self):
        from models.generative.semantic_ids import TokenizerConfig

        return TokenizerConfig(
            kind=self.kind,
            codebook_size=self.codebook_size,
            code_dim=self.code_dim,
            hidden=tuple(self.hidden),
            beta=self.beta,
            epochs=self.epochs,
            lr=self.lr,
            seed=self.seed,
        )


class GenerativeConfig(dg.Config):
    """The seq2seq retriever. Product defaults follow TIGER (d_model 128, 4+4 layers, FFN 512,
    beam 20); `make demo` passes a small model and a few epochs (Makefile DEMO_CONFIG)."""

    history_len: int = Field(default=_S2S.history_len, description="Last positives the encoder reads.")
    d_model: int = Field(default=_S2S.d_model, description="Transformer width.")
    heads: int = Field(default=_S2S.heads, description="Attention heads.")
    encoder_layers: int = Field(default=_S2S.encoder_layers, description="Encoder layers (TIGER 4, ETEGRec 6).")
    decoder_layers: int = Field(default=_S2S.decoder_layers, description="Decoder layers.")
    ffn: int = Field(default=_S2S.ffn, description="Feed-forward width.")
    dropout: float = Field(default=_S2S.dropout, description="Dropout in the transformer.")
    item_tokens: str = Field(
        default=_S2S.item_tokens,
        description="sum (one encoder token per history item, the "
        "sum of its code embeddings) or flat (TIGER: 4 tokens per item, 4x the sequence).",
    )
    batch_size: int = Field(default=_GEN.batch_size, description="Training rows per step.")
    epochs: int = Field(default=_GEN.epochs, description="Upper bound; early stopping on valid NDCG@10 ends sooner.")
    patience: int = Field(default=_GEN.patience, description="Epochs without a better valid NDCG@10 before stopping.")
    lr: float = Field(default=_GEN.lr, description="AdamW learning rate.")
    beam: int = Field(
        default=_GEN.beam,
        description="Beam width of validation, evaluation and serving (over-generated, then seen items are removed).",
    )
    valid_users: int = Field(
        default=_GEN.valid_users,
        description="Early stopping decodes a seeded sample of this many validation users (0 = all).",
    )
    max_minutes: float = Field(
        default=10.0, description="Training time budget (0 = none); the best weights so far are kept."
    )
    seed: int = Field(default=_GEN.seed, description="Seeds torch and NumPy.")
    mode: str = Field(
        default=_GEN.mode,
        description="tiger (the tokenizer stays as item_semantic_ids made it) or etegrec (ETEGRec: "
        "the RQ-VAE tokenizer trains in alternation with the retriever under two alignment losses, "
        "and this asset publishes the moved tokenizer's codes as the current semantic IDs).",
    )
    cycle: int = Field(
        default=_GEN.cycle, description="etegrec: the last of every `cycle` epochs trains the tokenizer."
    )
    sia_weight: float = Field(
        default=_GEN.sia_weight, description="etegrec: weight of the sequence-item alignment (symmetric KL)."
    )
    psa_weight: float = Field(
        default=_GEN.psa_weight, description="etegrec: weight of the preference-semantic alignment (InfoNCE)."
    )
    tokenizer_lr: float = Field(default=_GEN.tokenizer_lr, description="etegrec: the tokenizer epochs' learning rate.")

    def retriever_config(self, codebook_size: int):
        from models.generative.seq2seq import Seq2SeqConfig

        return Seq2SeqConfig(
            codebook_size=codebook_size,
            history_len=self.history_len,
            d_model=self.d_model,
            heads=self.heads,
            encoder_layers=self.encoder_layers,
            decoder_layers=self.decoder_layers,
            ffn=self.ffn,
            dropout=self.dropout,
            item_tokens=self.item_tokens,
        )

    def train_config(self):
        from models.generative.training import GenTrainConfig

        return GenTrainConfig(
            batch_size=self.batch_size,
            epochs=self.epochs,
            lr=self.lr,
            patience=self.patience,
            beam=self.beam,
            valid_users=self.valid_users,
            seed=self.seed,
            max_minutes=self.max_minutes,
            mode=self.mode,
            cycle=self.cycle,
            sia_weight=self.sia_weight,
            psa_weight=self.psa_weight,
            tokenizer_lr=self.tokenizer_lr,
        )


class GenerativeEvaluationConfig(dg.Config):
    eval_users: int = Field(
        default=0,
        description="Decode a seeded sample of this many valid / test users (0 = "
        "all of them, the same users as model_evaluation; the demo decodes a sample).",
    )
    beam: int = Field(default=0, description="Beam width (0 = the one the retriever was validated with).")
    seed: int = Field(default=0, description="Seed of the user sample.")
