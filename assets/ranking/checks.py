import json

import dagster as dg

from assets.reporting import check_result
from models.ranking.ranker import ranker_manifest
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset_check(
    asset="ranking_evaluation",
    blocking=True,
    description="The ranker's weighted score orders the retrieved candidates better than the "
    "retrieval score does, on valid NDCG@10 over the same lists; guards "
    "ranked_recommendations.",
)
def ranking_beats_retrieval_on_valid_ndcg(context, paths: TowerflowPaths, mlflow: MlflowTracker):
    version = ranker_manifest(paths.artifacts).get("latest")
    m = json.loads((paths.artifacts / "ranking" / version / "evaluation.json").read_text())["valid"]
    ranked, retrieval = m["ranked"]["ndcg@10"], m["retrieval"]["ndcg@10"]
    return check_result(
        context,
        mlflow,
        "ranking_beats_retrieval_on_valid_ndcg",
        ranked > retrieval,
        {
            "valid_ndcg@10_ranked": ranked,
            "threshold_valid_ndcg@10_retrieval_order": retrieval,
            "ratio": ranked / retrieval if retrieval else float("inf"),
            "ranker": version,
        },
    )
