import dagster as dg
import faiss
import numpy as np
from dagster_duckdb import DuckDBResource

from assets.config import IndexConfig
from assets.reporting import check_result
from assets.serving._current import current_model
from assets.serving.item_index import load_embeddings
from models.data import load_serving_users
from models.index import exact_search, recall_at_k
from models.serving import embed_users
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset_check(asset="item_index", blocking=True,
                description="Recall@10 of the index against exact inner-product search, on a sample of "
                            "real user vectors, reaches the configured threshold (0.95).")
def item_index_recall_at_10(context, config: IndexConfig, paths: TowerflowPaths, duckdb: DuckDBResource,
                            mlflow: MlflowTracker):
    with duckdb.get_connection() as con:
        cur = current_model(con, paths)
        t = cur.model.cfg
        users = load_serving_users(con, cur.catalog, history_len=t.history_len, n_hashes=t.n_hashes,
                                   user_buckets=t.user_buckets)
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(users), min(config.recall_sample, len(users)), replace=False))
    xq = embed_users(cur.model, cur.catalog, users.user_hash[rows], users.history[rows])
    _, xb, _ = load_embeddings(paths)
    index = faiss.read_index(str(paths.artifacts / "index" / "items.faiss"))
    k = min(10, len(xb))
    _, I = index.search(xq, k)
    _, I0 = exact_search(xb, np.arange(len(xb), dtype=np.int64), xq, k)
    recall = recall_at_k(I, I0, k)
    return check_result(context, mlflow, "item_index_recall_at_10", recall >= config.recall_threshold,
                        {"recall_at_10": recall, "threshold": config.recall_threshold, "queries": len(rows)})
