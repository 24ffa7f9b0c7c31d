import dagster as dg
import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from dagster_duckdb import DuckDBResource

from assets.config import RecommendationConfig
from assets.reporting import figures_metadata
from assets.serving._current import current_model
from assets.serving.item_index import load_embeddings
from models.data import load_serving_users
from models.serving import embed_users, search_excluding_seen
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset(deps=["item_index"], kinds={"parquet", "faiss"}, owners=["team:recsys"], tags={"layer": "serving"})
def batch_recommendations(context: dg.AssetExecutionContext, config: RecommendationConfig, paths: TowerflowPaths,
                          duckdb: DuckDBResource, mlflow: MlflowTracker) -> dg.MaterializeResult:
    """Top-K items per known user from the index, items the user already interacted with excluded:
    Parquet of user_id, rank, item_id, score."""
    with duckdb.get_connection() as con:
        cur = current_model(con, paths)
        t = cur.model.cfg
        users = load_serving_users(con, cur.catalog, history_len=t.history_len, n_hashes=t.n_hashes,
                                   user_buckets=t.user_buckets)
    item_ids, _, emb = load_embeddings(paths)
    if emb["model_version"] != cur.version:
        raise dg.Failure(f"index built from model {emb['model_version']}, current model is {cur.version}: "
                         "materialize item_embeddings and item_index first")
    # the index ids are embedding rows, which follow the catalog order of the same model version
    assert len(item_ids) == len(cur.catalog) and (item_ids == cur.catalog.item_ids).all()
    index = faiss.read_index(str(paths.artifacts / "index" / "items.faiss"))
    parts, batch = [], 4096
    for s in range(0, len(users), batch):
        e = min(len(users), s + batch)
        xq = embed_users(cur.model, cur.catalog, users.user_hash[s:e], users.history[s:e])
        seen = users.seen_of(range(s, e))
        D, I = search_excluding_seen(index, xq, seen, config.k)
        valid = I >= 0
        rows = np.nonzero(valid)
        parts.append(pa.table({
            "user_id": pa.array(users.user_keys[s:e][rows[0]].tolist(), pa.string()),
            "rank": pa.array(rows[1] + 1, pa.int32()),
            "item_id": pa.array(item_ids[I[valid]].tolist(), pa.string()),
            "score": pa.array(D[valid], pa.float32()),
        }))
        context.log.info(f"batch_recommendations: {e:,}/{len(users):,} users")
    table = pa.concat_tables(parts)
    out = paths.artifacts / "recommendations" / "batch_recommendations.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(out)
    figures = {"users": len(users), "rows": table.num_rows, "k": config.k,
               "distinct_items_recommended": len(set(table["item_id"].to_pylist())),
               "model_version": cur.version, "path": str(out)}
    mlflow.log(context, "batch_recommendations", {k: v for k, v in figures.items() if isinstance(v, (int, float))})
    return dg.MaterializeResult(metadata=figures_metadata(figures))
