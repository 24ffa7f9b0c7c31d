"""How the graph runs the ranking stage, beyond the ranker (RankerConfig) and its training
(RankerTrainConfig): which actions it learns and how they weigh, how many candidates the champion
retriever hands it, where the label window opens, how many ranked items are kept. The defaults
live here once; the Dagster config (assets/ranking/config.py) is derived from them.

`make demo` runs the stage smaller (Makefile RANKING_DEMO: 100 candidates, 4 epochs, 500
validation users) to stay near its time budget; these defaults are the product's."""

from __future__ import annotations

from dataclasses import dataclass

from models.ranking import DEFAULT_CANDIDATES
from models.retrieval.settings import RecommendationSettings
from models.settings import setting


@dataclass
class RankingSettings:
    action_set: str = setting(
        "auto",
        "Action vocabulary (models/ranking/labels.py): events "
        "(click, like, share, liked_rating, not_interested), ratings (MovieLens: rated, "
        "rated_4plus, rated_5, rated_low) or auto (ratings when every event is a rating).",
    )
    action_weights: dict[str, float] = setting(
        {},
        'Override an action\'s weight in the ranking score, e.g. {"not_interested": -20}; negative actions push down.',
    )
    n_candidates: int = setting(
        DEFAULT_CANDIDATES,  # the CLI's and the HTTP service's too
        "Candidates the champion retriever hands the ranker "
        "per user (seen items excluded); evaluation compares both orders over these "
        "(Phoenix retrieves ~1,000 for its feed).",
        ge=1,
    )
    label_share: float = setting(
        0.2,
        "Train rows: the last share of each user's "
        "train pairs opens the label window; history and retrieval see only what came before.",
        gt=0,
        lt=1,
    )
    train_cuts: int = setting(
        8,
        "Train cuts per user, evenly spaced over the label window (models/ranking/data.py): each "
        "is one next-item example with its own retrieved list and features as of its time.",
        ge=1,
    )
    max_lists: int = setting(
        20_000,
        "ranking_candidates' work budget in candidate lists (up to train_cuts + valid + test per "
        "user, each ranks the whole catalog): above it a sample of users (seeded by the training "
        "seed) keeps all its lists, the same users in every split (0 = every user). It bounds the "
        "ranker's data too: MovieLens (5,525 lists) and the demo (under 12k) fit whole; at 1M events "
        "40k lists took the ranker 4 CPU minutes an epoch and 7.4 GiB, all of 10M events' ~580k "
        "would take hours and more memory than the machine.",
        ge=0,
    )
    k: int = setting(
        RecommendationSettings.k,  # as many as the retriever's batch recommendations
        "ranked_recommendations: items kept per user after ranking.",
        ge=1,
    )
    negative_offset: float = setting(
        1e-3,
        "Phoenix's offset: a non-negative weighted score s "
        "becomes s + offset, a negative one a number in [0, offset) in the same order.",
    )
