import dagster as dg
import torch
from dagster_duckdb import DuckDBResource

import models.ranking.data as rk_data
import models.ranking.evaluation as rk_evaluation
import models.ranking.ranker as rk_ranker
import models.ranking.model as rk_model
from models.versions import WAREHOUSE_POOL, code_version
from assets.reporting import figures_metadata, md_table
from models.artifacts import write_json_atomic, write_manifest
from models.ranking.data import load_ranking_set
from models.ranking.evaluation import compare_orders, nan_to_none
from models.ranking.ranker import LoadedRanker, ranker_manifest
from orchestration.resources import MlflowTracker, TowerflowPaths


def ranking_passes(metrics: dict) -> bool:
    """The rule the blocking check states: the ranked order beats retrieval order on valid NDCG@10."""
    v = metrics["valid"]
    return v["ranked"]["ndcg@10"] > v["retrieval"]["ndcg@10"]


@dg.asset(
    deps=["ranking_model"],
    kinds={"pytorch"},
    owners=["team:recsys"],
    tags={"layer": "ranking"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__file__, rk_data, rk_evaluation, rk_ranker, rk_model),
)
def ranking_evaluation(
    context: dg.AssetExecutionContext, paths: TowerflowPaths, duckdb: DuckDBResource, mlflow: MlflowTracker
) -> dg.MaterializeResult:
    """On valid and test, the same retrieved candidates ordered by retrieval score and by the
    ranker's weighted score: NDCG@10 / HR@10 of the held-out pair, per-action AUC, and the share
    of candidates with a negative action that ranking pushes out of the top 10. Promotes the
    ranker (artifacts/ranking/manifest.json "current") when ranking wins on valid NDCG@10."""
    root = paths.artifacts / "ranking"
    manifest = ranker_manifest(paths.artifacts)
    version = manifest.get("latest")
    if not version:
        raise dg.Failure("no ranker to evaluate: materialize ranking_model first")
    ranker = LoadedRanker(root / version)
    negative = torch.tensor([w < 0 for w in ranker.weights.tolist()])
    metrics: dict = {"version": version}
    with duckdb.get_connection() as con:
        for split in ("valid", "test"):
            rs = load_ranking_set(con, split, ranker.cfg)
            probs, score = ranker.score(
                rs.user_hash, rs.history, rs.item_ids, rs.cand_valid.numpy(), rs.retrieval_score.numpy()
            )
            metrics[split] = compare_orders(probs, score, rs, ranker.actions, negative)
    metrics["promoted"] = ranking_passes(metrics)
    metrics = nan_to_none(metrics)
    write_json_atomic(root / version / "evaluation.json", metrics)
    if metrics["promoted"]:
        write_manifest(root, {**manifest, "current": version})
        context.log.info(f"ranker {version} promoted: beats retrieval order on valid NDCG@10")
    else:
        context.log.warning(
            f"ranker {version} NOT promoted: valid NDCG@10 ranked "
            f"{metrics['valid']['ranked']['ndcg@10']:.4f} <= retrieval order "
            f"{metrics['valid']['retrieval']['ndcg@10']:.4f}"
        )
    flat = {
        f"{split}.{order}.{k}": v
        for split in ("valid", "test")
        for order in ("retrieval", "ranked")
        for k, v in metrics[split][order].items()
    }
    flat.update({f"{split}.auc.{a}": v for split in ("valid", "test") for a, v in metrics[split]["auc"].items()})
    flat.update(
        {
            f"{split}.{k}": metrics[split][k]
            for split in ("valid", "test")
            for k in ("ndcg_ratio", "negatives_pushed_out_of_top10")
        }
    )
    mlflow.log(
        context,
        "ranking_evaluation",
        {**flat, "promoted": float(metrics["promoted"])},
        params={"evaluated_ranker": version},
        artifacts=[root / version / "evaluation.json"],
    )
    rows = [
        (split, order, round(metrics[split][order]["ndcg@10"], 4), round(metrics[split][order]["hr@10"], 4))
        for split in ("valid", "test")
        for order in ("retrieval", "ranked")
    ]
    aucs = [
        (a, *(None if metrics[s]["auc"][a] is None else round(metrics[s]["auc"][a], 4) for s in ("valid", "test")))
        for a in ranker.actions
    ]
    figures = {
        "version": version,
        "promoted": metrics["promoted"],
        "valid_ndcg@10_ranked": metrics["valid"]["ranked"]["ndcg@10"],
        "valid_ndcg@10_retrieval": metrics["valid"]["retrieval"]["ndcg@10"],
        "test_ndcg@10_ranked": metrics["test"]["ranked"]["ndcg@10"],
        "test_ndcg@10_retrieval": metrics["test"]["retrieval"]["ndcg@10"],
        "test_ndcg_ratio": metrics["test"]["ndcg_ratio"],
        "test_negatives_pushed_out_of_top10": metrics["test"]["negatives_pushed_out_of_top10"],
        "test_target_in_candidates": metrics["test"]["retrieval"]["target_in_candidates"],
    }
    return dg.MaterializeResult(
        metadata=figures_metadata(
            figures,
            tables={
                "orders": md_table(rows, ("split", "order", "NDCG@10", "HR@10")),
                "action_auc": md_table(aucs, ("action", "valid AUC", "test AUC")),
            },
        )
    )
