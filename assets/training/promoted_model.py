"""promoted_model: after model_evaluation's blocking check passed, the evaluated checkpoint's
logged model becomes a version of `towerflow-two-tower` in the MLflow Model Registry and the
alias `champion` moves to it. The models manifest's "current" is written last, as the local
mirror everything that serves reads offline (models.retrieval.checkpoint.champion_version).

A checkpoint that does not beat popularity is not promoted: a normal outcome for a retrain, not a
failed run. The asset records an observation saying so (assets.reporting.not_promoted) and
materializes nothing, so the serving, ranking and generative steps below it are skipped and
everything that serves keeps serving the current champion."""

import dagster as dg

from assets.reporting import not_promoted, promotion_result
from orchestration.versions import code_version
from assets.training.checks import latest_evaluation, promotion_passes
from models.artifacts import Layout
from models.retrieval.checkpoint import load_checkpoint, update_manifest
from models.retrieval.pyfunc import read_logged
from orchestration.resources import MlflowTracker, TowerflowPaths


def version_description(version: str, meta: dict, evaluation: dict) -> str:
    """What the registry's version page says: what data, which model, which check it passed."""
    model, pop = evaluation["model"], evaluation["popularity"]
    m = meta.get("metrics", {})
    return (
        f"Two-tower retriever ({meta['config']['tower']['encoder']} user encoder), checkpoint {version}: "
        f"the weights of epoch {m.get('best_epoch', '?'):g} of {m.get('epochs_run', '?'):g}, best validation "
        f"NDCG@10 (stopped by {m.get('stopped_by', '?')}). Trained on the train split of interaction_splits "
        f"(vocabulary {meta['vocabulary_fingerprint'][:12]}); evaluated by full ranking over the catalog. "
        f"Passed the promotion check beats_popularity_on_valid_ndcg: valid NDCG@10 {model['valid']['ndcg@10']:.4f} "
        f"vs popularity {pop['valid']['ndcg@10']:.4f}; test NDCG@10 {model['test']['ndcg@10']:.4f} "
        f"vs {pop['test']['ndcg@10']:.4f}."
    )


@dg.asset(
    deps=["model_evaluation"],
    kinds={"mlflow"},
    owners=["team:recsys"],
    tags={"layer": "model"},
    code_version=code_version(__name__),
    output_required=False,
)
def promoted_model(context: dg.AssetExecutionContext, paths: TowerflowPaths, mlflow: MlflowTracker):
    """The champion: a registered model version (tagged with the Dagster run, the data and
    vocabulary fingerprints and the evaluation figures) that the alias `champion` points at.

    Runs after the check `beats_popularity_on_valid_ndcg` (a warning when it fails) and applies
    the same rule (the check's function) before promoting anything."""
    root = Layout(paths.artifacts).models
    evaluation = latest_evaluation(paths)
    version = evaluation["version"]
    if not promotion_passes(evaluation):
        model, pop = evaluation["model"]["valid"]["ndcg@10"], evaluation["popularity"]["valid"]["ndcg@10"]
        diff = evaluation["comparison"]["valid"]
        yield not_promoted(
            context,
            mlflow,
            mlflow.registered_model,
            "checkpoint",
            version,
            f"valid NDCG@10 {model:.4f} <= popularity {pop:.4f} (95% interval of the difference "
            f"[{diff['difference_lo']:.4f}, {diff['difference_hi']:.4f}])",
            {"valid_ndcg@10": model, "valid_ndcg@10_popularity": pop},
        )
        return
    logged = read_logged(root / version)
    if logged is None:
        raise dg.Failure(
            f"checkpoint {version} has no logged MLflow model (mlflow.json): materialize two_tower_model again"
        )
    _, meta, _ = load_checkpoint(root / version)
    figures = {
        f"{who}.{split}.{k.replace('@', '_at_')}": round(evaluation[who][split][k], 6)
        for who in ("model", "popularity")
        for split in ("valid", "test")
        for k in ("ndcg@10", "hr@10")
    }
    tags = {
        "dagster_run_id": context.run.run_id,
        "vocabulary_fingerprint": meta["vocabulary_fingerprint"],
        "training_run_id": logged["run_id"],
        **figures,
    }
    number, created = mlflow.promote(
        version, tags, model_uri=logged["model_uri"], description=version_description(version, meta, evaluation)
    )
    update_manifest(root, current=version)
    yield promotion_result(
        context,
        mlflow,
        mlflow.registered_model,
        number,
        created,
        "checkpoint",
        version,
        {"model_uri": logged["model_uri"], "valid_ndcg@10": evaluation["model"]["valid"]["ndcg@10"]},
    )
