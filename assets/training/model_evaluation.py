"""model_evaluation: full ranking on valid and test next to popularity. It only measures: the
blocking check `beats_popularity_on_valid_ndcg` (checks.py, where the rule lives) decides, and
`promoted_model` promotes after it passed."""

import json

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.reporting import figures_metadata, md_table
from orchestration.versions import WAREHOUSE_POOL, code_version
from models.artifacts import Layout, write_json_atomic
from models.retrieval.checkpoint import load_checkpoint, read_manifest
from models.retrieval.data import load_for_tower
from models.retrieval.evaluation import evaluate_model, evaluate_popularity
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
    context: dg.AssetExecutionContext, paths: TowerflowPaths, duckdb: DuckDBResource, mlflow: MlflowTracker
) -> dg.MaterializeResult:
    """HR/Recall@K, NDCG@K, MRR and catalog coverage over all items, seen items excluded, for
    the latest checkpoint and for popularity, on valid and test."""
    root = Layout(paths.artifacts).models
    version = read_manifest(root).get("latest")
    if not version:
        raise dg.Failure("no checkpoint to evaluate: materialize two_tower_model first")
    with duckdb.get_connection() as con:
        fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
        model, meta, _ = load_checkpoint(root / version, expected_fingerprint=fingerprint)
        data = load_for_tower(con, model.cfg)
    metrics = {"model": {}, "popularity": {}}
    for ev in (data.valid, data.test):
        metrics["model"][ev.name] = evaluate_model(model, data.catalog, ev, KS, log=context.log.info)
        metrics["popularity"][ev.name] = evaluate_popularity(data.train, ev, KS)
    metrics["version"] = version
    write_json_atomic(root / version / "evaluation.json", metrics)
    flat = {
        f"{who}.{split}.{k}": v
        for who in ("model", "popularity")
        for split in ("valid", "test")
        for k, v in metrics[who][split].items()
    }
    mlflow.log(
        context,
        "model_evaluation",
        flat,
        params={"evaluated_checkpoint": version},
        artifacts=[root / version / "evaluation.json"],
    )
    rows = [
        (split, who, *(round(metrics[who][split][k], 4) for k in ("hr@10", "ndcg@10", "mrr", "coverage@10")))
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
        "eval_users_valid": int(metrics["model"]["valid"]["users"]),
        "eval_users_test": int(metrics["model"]["test"]["users"]),
    }
    return dg.MaterializeResult(
        metadata={
            **figures_metadata(
                figures,
                tables={"metrics": md_table(rows, ("split", "scorer", "HR@10", "NDCG@10", "MRR", "coverage@10"))},
            ),
            "evaluation": dg.MetadataValue.json(json.loads(json.dumps(metrics))),
        }
    )
