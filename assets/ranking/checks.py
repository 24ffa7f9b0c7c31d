"""The ranker's promotion rule and its check. ranking_evaluation measures, this check
decides, promoted_ranker promotes (the two-tower's pattern: model_evaluation,
beats_popularity_on_valid_ndcg, promoted_model). A challenger that loses is a normal outcome: the
check fails as a warning (PROMOTION_GATE), the run succeeds, and the champion keeps serving."""

import json

import dagster as dg

from assets.reporting import PROMOTION_GATE, check_result
from models.artifacts import Layout
from models.ranking.ranker import ranker_manifest
from orchestration.resources import MlflowTracker, TowerflowPaths


def ranking_passes(evaluation: dict) -> bool:
    """The promotion rule, in one place: the ranked order beats retrieval order on valid NDCG@10
    (the same retrieved candidates, the same users)."""
    v = evaluation["valid"]
    return v["ranked"]["ndcg@10"] > v["retrieval"]["ndcg@10"]


def latest_ranker_evaluation(paths: TowerflowPaths) -> dict:
    """evaluation.json of the latest ranker, as ranking_evaluation wrote it."""
    version = ranker_manifest(paths.artifacts).get("latest")
    path = Layout(paths.artifacts).ranking / str(version) / "evaluation.json"
    if not version or not path.exists():
        raise dg.Failure(f"ranker {version} has no evaluation: materialize ranking_evaluation first")
    return json.loads(path.read_text())


@dg.asset_check(
    asset="ranking_evaluation",
    blocking=True,
    description="The ranker's weighted score orders the retrieved candidates better than the "
    "retrieval score does, on valid NDCG@10 over the same lists. A warning when it does not: "
    "promoted_ranker then promotes nothing, ranked_recommendations is skipped and the champion "
    "ranker (if any) keeps serving `rank` requests.",
)
def ranking_beats_retrieval_on_valid_ndcg(context, paths: TowerflowPaths, mlflow: MlflowTracker):
    m = latest_ranker_evaluation(paths)
    ranked, retrieval = m["valid"]["ranked"]["ndcg@10"], m["valid"]["retrieval"]["ndcg@10"]
    return check_result(
        context,
        mlflow,
        "ranking_beats_retrieval_on_valid_ndcg",
        ranking_passes(m),
        {
            "valid_ndcg@10_ranked": ranked,
            "threshold_valid_ndcg@10_retrieval_order": retrieval,
            "ratio": ranked / retrieval if retrieval else float("inf"),
            "ranker": m["version"],
        },
        severity=PROMOTION_GATE,
    )
