import json

import dagster as dg

from assets.reporting import check_result
from models.retrieval.checkpoint import read_manifest
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset_check(asset="model_evaluation", blocking=True,
                description="The evaluated checkpoint beats popularity on validation NDCG@10 "
                            "(full ranking, seen items excluded); guards everything downstream.")
def beats_popularity_on_valid_ndcg(context, paths: TowerflowPaths, mlflow: MlflowTracker):
    root = paths.artifacts / "models"
    version = read_manifest(root).get("latest")
    m = json.loads((root / version / "evaluation.json").read_text())
    model, pop = m["model"]["valid"]["ndcg@10"], m["popularity"]["valid"]["ndcg@10"]
    return check_result(context, mlflow, "beats_popularity_on_valid_ndcg", model > pop,
                        {"valid_ndcg@10": model, "threshold_popularity_valid_ndcg@10": pop,
                         "ratio_to_popularity": model / pop if pop else float("inf"), "checkpoint": version})
