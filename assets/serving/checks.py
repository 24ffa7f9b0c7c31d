import dagster as dg
import numpy as np
from dagster_duckdb import DuckDBResource

from assets.serving.config import IndexConfig
from orchestration.versions import WAREHOUSE_POOL
from assets.reporting import check_result
from models.artifacts import Layout
from models.retrieval.inference import sample_users
from models.serving.recommender import Recommender
from models.index.embeddings import read_embeddings
from models.index.item_index import exact_search, recall_at_k
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset_check(
    asset="item_index",
    pool=WAREHOUSE_POOL,
    blocking=True,
    description="Recall@10 of the index against exact inner-product search over item_embeddings, "
    "on a sample of real user vectors, reaches the configured threshold (0.95), with the "
    "search setting the build tuned and serves with.",
)
def item_index_recall_at_10(
    context, config: IndexConfig, paths: TowerflowPaths, duckdb: DuckDBResource, mlflow: MlflowTracker
):
    with duckdb.get_connection() as con:  # a fixed pseudo-random sample of known users, not the tuning's
        sample = sample_users(con, config.recall_sample)
        rec = Recommender(con, paths.artifacts, users=sample)  # loads only what these users need
    xq = rec.core.user_vectors(np.arange(len(rec.user_ids)))  # the rule's vectors of the sampled users
    row_ids, _, xb = read_embeddings(Layout(paths.artifacts).embeddings, items=False)
    k = min(10, len(xb))
    _, I = rec.index.search(xq, k)
    _, I0 = exact_search(xb, row_ids, xq, k)
    recall = recall_at_k(I, I0, k)
    return check_result(
        context,
        mlflow,
        "item_index_recall_at_10",
        recall >= config.recall_threshold,
        {
            "recall_at_10": recall,
            "threshold": config.recall_threshold,
            "queries": len(xq),
            "index_type": rec.index.kind,
            "tombstones": len(rec.index.stale),
            "search": rec.index.manifest.get("search", {}).get("setting", ""),
        },
    )
