import json

import dagster as dg

from assets.reporting import PROMOTION_GATE, check_result
from models.artifacts import Layout
from models.retrieval.checkpoint import read_manifest
from orchestration.resources import MlflowTracker, TowerflowPaths


def promotion_passes(evaluation: dict) -> bool:
    """The promotion rule, in one place: the evaluated checkpoint beats popularity on valid
    NDCG@10 (full ranking, seen items excluded).

    It compares the points, and the check shows the paired 95% interval of the difference beside
    them (`significant`: the interval lies above zero). Requiring the interval would refuse every
    small home: on the tests' 170 validation users a model at 1.23x popularity has the interval
    [-0.028, +0.083]; at the sample model_evaluation draws at scale (10,000 users) the interval is
    about +-0.006 wide, so the point decides what the interval would."""
    return evaluation["model"]["valid"]["ndcg@10"] > evaluation["popularity"]["valid"]["ndcg@10"]


def latest_evaluation(paths: TowerflowPaths) -> dict:
    """evaluation.json of the latest checkpoint, as model_evaluation wrote it."""
    root = Layout(paths.artifacts).models
    version = read_manifest(root).get("latest")
    path = root / str(version) / "evaluation.json"
    if not version or not path.exists():
        raise dg.Failure(f"checkpoint {version} has no evaluation: materialize model_evaluation first")
    return json.loads(path.read_text())


@dg.asset_check(
    asset="model_evaluation",
    blocking=True,
    description="The evaluated checkpoint beats popularity on validation NDCG@10 "
    "(full ranking, seen items excluded), with the paired 95% interval of the difference over the "
    "evaluated users beside it. A warning when it does not: promoted_model then "
    "promotes nothing, the steps below it are skipped and the champion keeps serving.",
)
def beats_popularity_on_valid_ndcg(context, paths: TowerflowPaths, mlflow: MlflowTracker):
    m = latest_evaluation(paths)
    model, pop = m["model"]["valid"]["ndcg@10"], m["popularity"]["valid"]["ndcg@10"]
    diff = m["comparison"]["valid"]
    return check_result(
        context,
        mlflow,
        "beats_popularity_on_valid_ndcg",
        promotion_passes(m),
        {
            "valid_ndcg@10": model,
            "threshold_popularity_valid_ndcg@10": pop,
            "ratio_to_popularity": model / pop if pop else float("inf"),
            "difference_95_lo": diff["difference_lo"],
            "difference_95_hi": diff["difference_hi"],
            "significant": diff["difference_lo"] > 0,
            "valid_users": int(m["model"]["valid"]["users"]),
            "checkpoint": m["version"],
        },
        severity=PROMOTION_GATE,
    )
