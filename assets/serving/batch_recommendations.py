import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from dagster_duckdb import DuckDBResource

from assets.serving.config import RecommendationConfig
from assets.reporting import figures_metadata
from assets.versions import WAREHOUSE_POOL, code_version
from models.artifacts import Layout, atomic_file
from models.progress import Progress
from models.serving.recommender import Recommender
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset(
    deps=["item_index"],
    kinds={"parquet", "faiss"},
    owners=["team:recsys"],
    tags={"layer": "serving"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def batch_recommendations(
    context: dg.AssetExecutionContext,
    config: RecommendationConfig,
    paths: TowerflowPaths,
    duckdb: DuckDBResource,
    mlflow: MlflowTracker,
) -> dg.MaterializeResult:
    """Top-K items per known user from the index, items the user already interacted with excluded:
    Parquet of user_id, rank, item_id, score."""
    with duckdb.get_connection() as con:
        rec = Recommender(con, paths.artifacts)
    users = rec.user_ids
    parts, batch = [], 4096
    progress = Progress("batch_recommendations", len(users), "users", context.log.info)
    for s in range(0, len(users), batch):
        rows = np.arange(s, min(len(users), s + batch))
        D, I = rec.core.retrieve(rows, config.k)  # the retrieval rule, many known users at once
        valid = I >= 0
        q, r = np.nonzero(valid)
        parts.append(
            pa.table(
                {
                    "user_id": pa.array(users[rows][q].tolist(), pa.string()),
                    "rank": pa.array(r + 1, pa.int32()),
                    "item_id": pa.array(rec.index.items_of(I[valid]).tolist(), pa.string()),
                    "score": pa.array(D[valid], pa.float32()),
                }
            )
        )
        progress.update(len(rows))
    table = pa.concat_tables(parts)
    out = Layout(paths.artifacts).recommendations / "batch_recommendations.parquet"
    with atomic_file(out) as tmp:
        pq.write_table(table, tmp)
    figures = {
        "users": len(users),
        "rows": table.num_rows,
        "k": config.k,
        "distinct_items_recommended": len(set(table["item_id"].to_pylist())),
        "model_version": rec.version,
        "path": str(out),
    }
    mlflow.log(context, "batch_recommendations", {k: v for k, v in figures.items() if isinstance(v, (int, float))})
    return dg.MaterializeResult(metadata=figures_metadata(figures))
