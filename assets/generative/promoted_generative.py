"""promoted_generative: after generative_evaluation's blocking check passed, the evaluated
checkpoint folder (weights, the codes it was trained with, in ETEGRec mode its tokenizer) becomes
a version of `towerflow-generative` in the MLflow Model Registry and the alias `champion` moves to
it; then artifacts/generative/manifest.json "current" is written, the local mirror that serving
(`towerflow recommend --retriever generative`) and the new-items path (item_semantic_ids adopts an
ETEGRec pair's tokenizer) read offline. A checkpoint that does not beat chance is not promoted: the
asset records an observation saying so (assets.reporting.not_promoted), materializes nothing, and the
run goes on; the champion, if any, keeps serving."""

import dagster as dg

from assets.generative.checks import generative_passes, latest_generative_evaluation
from assets.reporting import not_promoted, promotion_result
from models import artifacts
from orchestration.versions import code_version
from models.artifacts import Layout
from orchestration.resources import GENERATIVE_MODEL, MlflowTracker, TowerflowPaths


@dg.asset(
    deps=["generative_evaluation"],
    kinds={"mlflow"},
    owners=["team:recsys"],
    tags={"layer": "model"},
    code_version=code_version(__name__),
    output_required=False,
)
def promoted_generative(context: dg.AssetExecutionContext, paths: TowerflowPaths, mlflow: MlflowTracker):
    """The champion generative retriever: a registered model version (tagged with the Dagster
    run, its tokenizer and the evaluation figures) that the alias `champion` points at.

    Runs after the check `generative_beats_chance_on_valid_hr` (a warning when it fails) and
    applies the same rule (the check's function) before promoting anything."""
    evaluation = latest_generative_evaluation(paths)
    version = evaluation["generative_version"]
    valid = evaluation["generative"]["valid"]
    if not generative_passes(evaluation):
        yield not_promoted(
            context,
            mlflow,
            GENERATIVE_MODEL,
            "checkpoint",
            version,
            f"valid HR@10 {valid['hr@10']:.4f} <= chance {valid['chance_hr@10']:.4f}",
            {"valid_hr@10": valid["hr@10"], "valid_chance_hr@10": valid["chance_hr@10"]},
        )
        return
    root = Layout(paths.artifacts).generative
    figures = {
        f"{who}.{split}.{k.replace('@', '_at_')}": round(evaluation[who][split][k], 6)
        for who in ("generative", "popularity")
        for split in ("valid", "test")
        for k in ("ndcg@10", "hr@10")
    }
    number, created = mlflow.promote(
        version,
        {"dagster_run_id": context.run.run_id, "tokenizer": evaluation["tokenizer"], **figures},
        folder=root / version,
        context=context,
        registered_model=GENERATIVE_MODEL,
        description=(
            f"Semantic-ID generative retriever {version} with tokenizer {evaluation['tokenizer']} (the "
            f"codes it was trained with are part of this version), beam search over the codes. Passed "
            f"the promotion check generative_beats_chance_on_valid_hr: valid HR@10 {valid['hr@10']:.4f} vs "
            f"chance {valid['chance_hr@10']:.4f}; valid / test NDCG@10 {valid['ndcg@10']:.4f} / "
            f"{evaluation['generative']['test']['ndcg@10']:.4f}."
        ),
    )
    artifacts.write_manifest(root, {**(artifacts.read_manifest(root) or {}), "current": version})
    yield promotion_result(
        context,
        mlflow,
        GENERATIVE_MODEL,
        number,
        created,
        "checkpoint",
        version,
        {
            "tokenizer": evaluation["tokenizer"],
            "valid_hr@10": valid["hr@10"],
            "valid_chance_hr@10": valid["chance_hr@10"],
        },
    )
