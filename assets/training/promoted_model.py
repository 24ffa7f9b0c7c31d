"""promoted_model: after model_evaluation's blocking check passed, the evaluated checkpoint's
logged model becomes a version of `towerflow-two-tower` in the MLflow Model Registry and the
alias `champion` moves to it. The models manifest's "current" is written last, as the local
mirror everything that serves reads offline (models.retrieval.checkpoint.champion_version).

A checkpoint that does not beat popularity is not promoted: a normal outcome for a retrain, not a
failed run. The asset records an observation saying so (assets.reporting.not_promoted) and
materializes nothing, so the serving, ranking and generative steps below it are skipped and
everything that serves keeps serving the current champion.

While a version holds the alias `challenger` (an online A/B test is running), the champion moves
only by that test's decision (assets/abtest/checks.py `ab_outcome`, the rule of the blocking check
`challenger_wins_ab_test` on `ab_test_report`): a winning challenger becomes `champion` (its
checkpoint the manifest's "current") and loses `challenger`; a losing one is retired (its
`challenger` alias removed), and the retrain rule below then runs as usual; an inconclusive test
keeps the champion. The version that lost (the replaced champion, or the retired challenger) is
tagged `ab_test=lost` and the retrain rule never promotes its checkpoint again, so a rerun of this
asset cannot undo the decision. With no challenger the retrain path is what it always was."""

import dagster as dg

from assets.abtest.checks import ab_outcome
from assets.reporting import figures_metadata, not_promoted, promotion_result
from models.abtest.stats import INCONCLUSIVE, LOSES, WINS
from orchestration.versions import code_version
from assets.training.checks import latest_evaluation, promotion_passes
from models.artifacts import Layout
from models.retrieval.checkpoint import load_checkpoint, update_manifest
from models.retrieval.pyfunc import read_logged
from models.serving.arms import retire_challenger
from orchestration.resources import CHALLENGER, CHAMPION, MlflowTracker, TowerflowPaths


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
    deps=["model_evaluation", "ab_test_report"],
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
    the same rule (the check's function) before promoting anything; while an A/B test runs, the
    champion moves by its decision instead (see the module's docstring)."""
    root = Layout(paths.artifacts).models
    decision, why, report = ab_outcome(paths, mlflow)
    if decision == WINS:
        yield challenger_promoted(context, mlflow, root, why, report)
        return
    if decision == LOSES:
        yield challenger_retired(context, mlflow, root, why, report)
    elif decision == INCONCLUSIVE:
        yield not_promoted(
            context,
            mlflow,
            mlflow.registered_model,
            "checkpoint",
            mlflow.champion(alias=CHALLENGER).tags.get("checkpoint", "?"),
            f"the online A/B test is not decided ({why})",
            {"ab_decision": decision},
        )
        return
    evaluation = latest_evaluation(paths)
    version = evaluation["version"]
    registered = mlflow.version_of(version)
    if registered is not None and registered.tags.get("ab_test") == "lost":
        yield not_promoted(
            context,
            mlflow,
            mlflow.registered_model,
            "checkpoint",
            version,
            f"its version {registered.version} lost an online A/B test",
            {"lost_version": int(registered.version)},
        )
        return
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


def challenger_promoted(context, mlflow: MlflowTracker, root, why: str, report: dict) -> dg.MaterializeResult:
    """The challenger won online: `champion` moves to it, `challenger` is removed, both versions are
    tagged with the decision, and its checkpoint becomes the manifest's "current"."""
    challenger, old = mlflow.champion(alias=CHALLENGER), mlflow.champion()
    checkpoint = challenger.tags.get("checkpoint")
    if not checkpoint or not (root / checkpoint).exists():
        raise dg.Failure(
            f"challenger version {challenger.version} (checkpoint {checkpoint}) has no checkpoint folder under {root}: "
            "everything that serves reads the champion from there; register a checkpoint trained here"
        )
    d = report["difference"][report["metric"]]
    decided = {
        "ab_test_metric": report["metric"],
        "ab_test_difference": round(d["value"], 6),
        "ab_test_interval": f"[{d['lo']:.6f}, {d['hi']:.6f}]",
        "dagster_run_id": context.run.run_id,
    }
    mlflow.move_alias(CHAMPION, int(challenger.version))
    mlflow.drop_alias(CHALLENGER)
    mlflow.tag_version(
        int(challenger.version), {"ab_test": "won", "ab_test_against": old.version if old else "", **decided}
    )
    if old is not None:
        mlflow.tag_version(int(old.version), {"ab_test": "lost", "ab_test_against": challenger.version, **decided})
    update_manifest(root, current=checkpoint)
    retire_challenger(root.parent)  # served as the champion from now on, no longer as the challenger
    return promotion_result(
        context,
        mlflow,
        mlflow.registered_model,
        int(challenger.version),
        False,
        "checkpoint",
        checkpoint,
        {
            "promoted_by": "online A/B test",
            "ab_decision": report["decision"],
            "why": why,
            "replaced_version": int(old.version) if old else None,
            "difference": d["value"],
        },
    )


def challenger_retired(context, mlflow: MlflowTracker, root, why: str, report: dict) -> dg.AssetObservation:
    """The challenger lost online: its `challenger` alias is removed and the version tagged lost;
    the champion stays."""
    challenger, champion = mlflow.champion(alias=CHALLENGER), mlflow.champion()
    d = report["difference"][report["metric"]]
    mlflow.drop_alias(CHALLENGER)
    retire_challenger(root.parent)  # the service stops serving it at its next poll
    mlflow.tag_version(
        int(challenger.version),
        {
            "ab_test": "lost",
            "ab_test_against": champion.version if champion else "",
            "ab_test_metric": report["metric"],
            "ab_test_difference": round(d["value"], 6),
            "ab_test_interval": f"[{d['lo']:.6f}, {d['hi']:.6f}]",
            "dagster_run_id": context.run.run_id,
        },
    )
    context.log.warning(
        f"{mlflow.registered_model}: challenger version {challenger.version} retired ({why}); "
        f"version {champion.version if champion else None} stays @{CHAMPION}"
    )
    mlflow.log(context, "promoted_model", {"ab_test_retired": 1.0}, params={"retired_version": challenger.version})
    return dg.AssetObservation(
        asset_key=context.asset_key,
        metadata=figures_metadata(
            {
                "ab_decision": report["decision"],
                "why": why,
                "retired_version": int(challenger.version),
                "retired_checkpoint": challenger.tags.get("checkpoint"),
                "champion_version": int(champion.version) if champion else None,
                "difference": d["value"],
            }
        ),
    )
