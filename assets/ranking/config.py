"""The ranking group's Dagster config, derived from the library's dataclasses: the ranker
(RankerConfig), its training (RankerTrainConfig) and how the group runs it (RankingSettings).
Back to the library: `ranker_config_for(weights, n_items, n_users, **fields_for(config,
RankerConfig))` and `to_library(config, RankerTrainConfig)`."""

import dagster as dg

from assets._config import config_from, without
from models.ranking.model import RankerConfig
from models.ranking.settings import RankingSettings
from models.ranking.training import RankerTrainConfig

RankingConfig: type[dg.Config] = config_from(
    "RankingConfig",
    RankingSettings,
    without(
        RankerConfig,
        n_actions="one head per action of action_labels' vocabulary",
        ffn="a model-size choice the product keeps fixed",
        id_dim="a model-size choice the product keeps fixed",
        n_hashes="two hashes (Phoenix): the id tables are sized for it",
        item_buckets="2x the items of action_labels (ranker_config_for)",
        user_buckets="2x the users of action_labels (ranker_config_for)",
        dropout="a model-size choice the product keeps fixed",
        use_retrieval_score="the retriever's score and rank are always candidate inputs",
        user_id="an ablation: the product's user token carries the hashed user id",
        candidate_id="an ablation: the product's candidate token carries no hashed item id (it memorised the train lists)",
        n_features="the feature set is models/ranking/features.py's FEATURES",
        action_signs="the sign of each action's weight (ranker_config_for)",
    ),
    without(
        RankerTrainConfig,
        min_steps="a floor for small data, not a product choice",
        weight_decay="an optimiser constant the product keeps fixed",
        clip_norm="an optimiser constant the product keeps fixed",
        max_steps="tests and smoke runs",
    ),
    doc="The ranking stage (assets/ranking/): action labels, candidates, the ranker and its use. "
    "`make demo` runs it smaller (Makefile RANKING_DEMO: 100 candidates, 4 epochs, 500 validation "
    "users) to stay near its time budget; these defaults are the product's.",
)
