"""promoted_ranker: after ranking_evaluation's blocking check passed, the evaluated ranker's
checkpoint folder becomes a version of `towerflow-ranker` in the MLflow Model Registry and the
alias `champion` moves to it; then artifacts/ranking/manifest.json "current" is written, the local
mirror that ranked_recommendations, the CLI and the HTTP service read offline
(models.ranking.ranker.load_ranker). A ranker that does not beat retrieval order is not promoted:
a normal outcome (on MovieLens the ranker rarely wins), not a failed run. The asset then records
an observation saying so (assets.reporting.not_promoted), materializes nothing, and
ranked_recommendations below it is skipped: the champion ranker, if any, keeps serving."""

import dagster as dg

from assets.ranking.checks import latest_ranker_evaluation, ranking_passes
from assets.reporting import not_promoted, promotion_result
from models.artifacts import Layout, write_manifest
from models.ranking.ranker import ranker_manifest
from orchestration.versions import code_version
from orchestration.resources import RANKER_MODEL, MlflowTracker, TowerflowPaths


@dg.asset(
    deps=["ranking_evaluation"],
    kinds={"mlflow"},
    owners=["team:recsys"],
    tags={"layer": "ranking"},
    code_version=code_version(__name__),
    output_required=False,
)
def promoted_ranker(context: dg.AssetExecutionContext, paths: TowerflowPaths, mlflow: MlflowTracker):
    """The champion ranker: a registered model version (tagged with the Dagster run, the
    retriever it ranks for and the evaluation figures) that the alias `champion` points at.

    Runs after the check `ranking_beats_retrieval_on_valid_ndcg` (a warning when it fails) and
    applies the same rule (the check's function) before promoting anything."""
    evaluation = latest_ranker_evaluation(paths)
    version = evaluation["version"]
    valid = evaluation["valid"]
    if not ranking_passes(evaluation):
        ranked, retrieval = valid["ranked"]["ndcg@10"], valid["retrieval"]["ndcg@10"]
        yield not_promoted(
            context,
            mlflow,
            RANKER_MODEL,
            "ranker",
            version,
            f"valid NDCG@10 ranked {ranked:.4f} <= retrieval order {retrieval:.4f}",
            {"valid_ndcg@10_ranked": ranked, "valid_ndcg@10_retrieval": retrieval},
        )
        return
    root = Layout(paths.artifacts).ranking
    figures = {
        f"{split}.{order}.ndcg_at_10": round(evaluation[split][order]["ndcg@10"], 6)
        for split in ("valid", "test")
        for order in ("ranked", "retrieval")
    }
    number, created = mlflow.promote(
        version,
        {"dagster_run_id": context.run.run_id, **figures},
        folder=root / version,
        context=context,
        registered_model=RANKER_MODEL,
        description=(
            f"Phoenix-style ranker {version} over the champion retriever's candidates, scored by the "
            f"weighted action score. Passed the promotion check ranking_beats_retrieval_on_valid_ndcg: "
            f"valid NDCG@10 ranked {valid['ranked']['ndcg@10']:.4f} vs retrieval order "
            f"{valid['retrieval']['ndcg@10']:.4f}; test {evaluation['test']['ranked']['ndcg@10']:.4f} vs "
            f"{evaluation['test']['retrieval']['ndcg@10']:.4f}."
        ),
    )
    write_manifest(root, {**ranker_manifest(paths.artifacts), "current": version})
    yield promotion_result(
        context,
        mlflow,
        RANKER_MODEL,
        number,
        created,
        "ranker",
        version,
        {"valid_ndcg@10_ranked": valid["ranked"]["ndcg@10"], "valid_ndcg@10_retrieval": valid["retrieval"]["ndcg@10"]},
    )
