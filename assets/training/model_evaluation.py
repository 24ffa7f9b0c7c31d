"""model_evaluation: full ranking on valid and test next to popularity, on the same seeded user
sample (`EvaluationRun.eval_users`; every user on small data), each figure with its 95% bootstrap
interval over users and the model-minus-popularity difference with its paired interval. It only
measures: the blocking check `beats_popularity_on_valid_ndcg` (checks.py, where the rule lives)
decides, and `promoted_model` promotes after it passed."""

import json

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.training.config import ModelEvaluationConfig
from assets.reporting import figures_metadata, md_table
from orchestration.versions import WAREHOUSE_POOL, code_version
from models.artifacts import Layout, write_json_atomic
from models.retrieval.checkpoint import load_checkpoint, read_manifest
from models.retrieval.data import load_for_tower
from models.retrieval.evaluation import bootstrap_interval, evaluate_model, evaluate_popularity, paired_difference
from orchestration.resources import MlflowTracker, TowerflowPaths

KS = (10, 20, 50)


@dg.asset(
    deps=["two_tower_model"],
    kinds={"pytorch"},
    owners=["team:recsys"],
    tags={"layer": "model"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: ModelEvaluationConfig,
    paths: TowerflowPaths,
    duckdb: DuckDBResource,
    mlflow: MlflowTracker,
) -> dg.MaterializeResult:
    """HR/Recall@K, NDCG@K, MRR and catalog coverage over all items, seen items excluded, for
    the latest checkpoint and for popularity, on valid and test (the same user sample for both),
    with 95% intervals over users."""
    root = Layout(paths.artifacts).models
    version = read_manifest(root).get("latest")
    if not version:
        raise dg.Failure("no checkpoint to evaluate: materialize two_tower_model first")
    with duckdb.get_connection() as con:
        fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
        model, meta, _ = load_checkpoint(root / version, expected_fingerprint=fingerprint)
        # only the sampled users' sets are built (EvalSet.sample's users: load_from_warehouse)
        data = load_for_tower(con, model.cfg, sample=(config.eval_users, config.seed))
    metrics = {"model": {}, "popularity": {}, "comparison": {}}
    draw = dict(resamples=config.resamples, seed=config.seed)
    for split, ev in (("valid", data.valid), ("test", data.test)):
        total = data.users_total[split]
        context.log.info(f"{ev.name}: ranking {len(ev):,} of {total:,} users against {len(data.catalog):,} items")
        vectors = {}
        for who, (figures, per_user) in {
            "model": evaluate_model(model, data.catalog, ev, KS, log=context.log.info, per_user=True),
            "popularity": evaluate_popularity(data.train, ev, KS, per_user=True),
        }.items():
            for name in ("ndcg@10", "hr@10"):
                figures[f"{name}_ci"] = list(bootstrap_interval(per_user[name], **draw))
            figures["users_total"] = float(total)
            metrics[who][split], vectors[who] = figures, per_user  # keyed by split: a sample names itself
        metrics["comparison"][split] = paired_difference(
            vectors["model"]["ndcg@10"], vectors["popularity"]["ndcg@10"], **draw
        )
    metrics["version"] = version
    write_json_atomic(root / version / "evaluation.json", metrics)
    flat = {
        f"{who}.{split}.{k}": v
        for who in ("model", "popularity")
        for split in ("valid", "test")
        for k, v in metrics[who][split].items()
        if not k.endswith("_ci")
    }
    mlflow.log(
        context,
        "model_evaluation",
        flat,
        params={"evaluated_checkpoint": version},
        artifacts=[root / version / "evaluation.json"],
    )
    flat.update(
        {
            f"model_minus_popularity.{split}.ndcg@10_{k}": v
            for split, c in metrics["comparison"].items()
            for k, v in c.items()
        }
    )

    def interval(split: str, who: str, name: str) -> str:
        m = metrics[who][split]
        lo, hi = m[f"{name}_ci"]
        return f"{m[name]:.4f} [{lo:.4f}, {hi:.4f}]"

    rows = [
        (
            split,
            who,
            int(metrics[who][split]["users"]),
            interval(split, who, "hr@10"),
            interval(split, who, "ndcg@10"),
            *(round(metrics[who][split][k], 4) for k in ("mrr", "coverage@10")),
        )
        for split in ("valid", "test")
        for who in ("model", "popularity")
    ]
    figures = {
        "version": version,
        "valid_ndcg@10": metrics["model"]["valid"]["ndcg@10"],
        "valid_ndcg@10_popularity": metrics["popularity"]["valid"]["ndcg@10"],
        "test_ndcg@10": metrics["model"]["test"]["ndcg@10"],
        "test_hr@10": metrics["model"]["test"]["hr@10"],
        "test_ndcg@10_popularity": metrics["popularity"]["test"]["ndcg@10"],
        "valid_ndcg@10_minus_popularity_lo": metrics["comparison"]["valid"]["difference_lo"],
        "valid_ndcg@10_minus_popularity_hi": metrics["comparison"]["valid"]["difference_hi"],
        "eval_users_valid": int(metrics["model"]["valid"]["users"]),
        "eval_users_test": int(metrics["model"]["test"]["users"]),
    }
    return dg.MaterializeResult(
        metadata={
            **figures_metadata(
                figures,
                tables={
                    "metrics": md_table(
                        rows, ("split", "scorer", "users", "HR@10 [95%]", "NDCG@10 [95%]", "MRR", "coverage@10")
                    )
                },
            ),
            "evaluation": dg.MetadataValue.json(json.loads(json.dumps(metrics))),
        }
    )
