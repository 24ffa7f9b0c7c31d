"""The ranking stage that `rank: true` runs in the HTTP service: models/ranking's promoted ranker
over what the service knows."""

from __future__ import annotations

from pathlib import Path


def promoted_ranker(artifacts: Path):
    """The ranking stage `rank: true` runs (models/ranking's promoted ranker), or None while no
    ranker is promoted (the service then answers 409 "no ranker is promoted"). Called whenever a
    snapshot loads; the ranker's manifest is among the ones the reloader watches, so a newly
    promoted ranker is served after the next reload."""
    from models.ranking.ranker import load_ranker

    ranker = load_ranker(artifacts)
    return None if ranker is None else ServiceRanker(ranker)


class ServiceRanker:
    """The promoted ranker over what the service knows: the user's history from the
    user_histories artifact (latest last) plus the request's recent items, and the retrieved
    candidates with their retrieval scores. The service holds no action log, so history items
    enter the ranker as positives with no specific action (mask 0); batch ranking
    (ranked_recommendations) reads each item's actions from the warehouse and can differ."""

    def __init__(self, ranker):
        self.ranker = ranker
        self.version = ranker.version

    def rank(
        self, user_id: str | None, history: list[str], candidates: list[str], retrieval_scores: list[float]
    ) -> list[tuple[str, float]]:
        result = self.ranker.rank(user_id or "", history, [0] * len(history), candidates, retrieval_scores)
        return list(zip(result.item_ids, result.score.tolist()))
