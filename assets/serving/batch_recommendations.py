import dagster as dg
import numpy as np
import pyarrow as pa
from dagster_duckdb import DuckDBResource

from assets.serving.config import RecommendationConfig
from assets.serving._recommendations import write_recommendations
from orchestration.versions import WAREHOUSE_POOL, code_version
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

    def answer(s: int, e: int) -> pa.Table:
        rows = np.arange(s, e)
        D, I = rec.core.retrieve(rows, config.k)  # the retrieval rule, many known users at once
        valid = I >= 0
        q, r = np.nonzero(valid)
        return pa.table(
            {
                "user_id": pa.array(users[rows][q].tolist(), pa.string()),
                "rank": pa.array(r + 1, pa.int32()),
                "item_id": pa.array(rec.index.items_of(I[valid]).tolist(), pa.string()),
                "score": pa.array(D[valid], pa.float32()),
            }
        )

    return write_recommendations(
        context, paths, mlflow, len(users), 4096, answer, {"k": config.k, "model_version": rec.version}
    )
