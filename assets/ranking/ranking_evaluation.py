"""ranking_evaluation: the same retrieved candidates in retrieval order and in the ranker's order.
It only measures: the blocking check `ranking_beats_retrieval_on_valid_ndcg` (checks.py, where
the rule lives) decides, and `promoted_ranker` promotes after it passed."""

import dagster as dg
import torch
from dagster_duckdb import DuckDBResource

from orchestration.versions import WAREHOUSE_POOL, code_version
from assets.reporting import figures_metadata, md_table
from models.artifacts import Layout, write_json_atomic
from models.ranking.data import load_ranking_set
from models.ranking.evaluation import compare_orders, nan_to_none
from models.ranking.features import ItemTimeline
from models.ranking.ranker import LoadedRanker, ranker_manifest
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset(
    deps=["ranking_model"],
    kinds={"pytorch"},
    owners=["team:recsys"],
    tags={"layer": "ranking"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def ranking_evaluation(
    context: dg.AssetExecutionContext, paths: TowerflowPaths, duckdb: DuckDBResource, mlflow: MlflowTracker
) -> dg.MaterializeResult:
    """On valid and test, the same retrieved candidates ordered by retrieval score and by the
    ranker's weighted score: NDCG@10 / HR@10 of the held-out pair, per-action AUC, and the share
    of candidates with a negative action that ranking pushes out of the top 10, written to the
    latest ranker's evaluation.json (what the check and promoted_ranker read)."""
    root = Layout(paths.artifacts).ranking
    manifest = ranker_manifest(paths.artifacts)
    version = manifest.get("latest")
    if not version:
        raise dg.Failure("no ranker to evaluate: materialize ranking_model first")
    ranker = LoadedRanker(root / version)
    negative = torch.tensor([w < 0 for w in ranker.weights.tolist()])
    metrics: dict = {"version": version}
    with duckdb.get_connection() as con:
        # the item events once for both splits (reading them is most of a split's loading at 10M events)
        timeline = (
            ItemTimeline.from_warehouse(con, log=context.log.info) if getattr(ranker.cfg, "n_features", 0) else None
        )
        for split in ("valid", "test"):
            rs = load_ranking_set(con, split, ranker.cfg, timeline=timeline, log=context.log.info)
            probs, score = ranker.score(  # features as of each user's cut, never the snapshot's later counts
                rs.user_hash,
                rs.history,
                rs.item_ids,
                rs.cand_valid.numpy(),
                rs.retrieval_score.numpy(),
                features=rs.features,
            )
            metrics[split] = compare_orders(probs, score, rs, ranker.actions, negative)
    metrics = nan_to_none(metrics)
    write_json_atomic(root / version / "evaluation.json", metrics)
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
        flat,
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
