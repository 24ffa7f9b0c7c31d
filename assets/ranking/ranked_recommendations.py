import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from dagster_duckdb import DuckDBResource

from assets.versions import WAREHOUSE_POOL, code_version
from assets.ranking.config import RankingConfig
from assets.reporting import figures_metadata
from models.artifacts import Layout, atomic_file
from models.progress import Progress
from models.ranking.ranker import load_ranker, rank_users
from models.serving.recommender import Recommender
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset(
    deps=["promoted_ranker", "item_index"],
    kinds={"parquet", "pytorch"},
    owners=["team:recsys"],
    tags={"layer": "ranking"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def ranked_recommendations(
    context: dg.AssetExecutionContext,
    config: RankingConfig,
    paths: TowerflowPaths,
    duckdb: DuckDBResource,
    mlflow: MlflowTracker,
) -> dg.MaterializeResult:
    """Per known user: the champion retriever's top N (seen items excluded) ordered by the
    promoted ranker, top k kept. Parquet of user_id, rank, item_id, score (weighted),
    retrieval_score and one p_<action> probability column per action."""
    ranker = load_ranker(paths.artifacts)
    if ranker is None:
        raise dg.Failure("no promoted ranker: promoted_ranker promotes one only after it beats retrieval order")
    with duckdb.get_connection() as con:
        rec = Recommender(con, paths.artifacts)
    users = rec.user_ids.tolist()
    parts, batch = [], 1024
    progress = Progress("ranked_recommendations", len(users), "users", context.log.info)
    with duckdb.get_connection() as con:
        for s in range(0, len(users), batch):
            parts.append(
                pa.Table.from_pandas(
                    rank_users(con, rec, ranker, users[s : s + batch], config.n_candidates, config.k),
                    preserve_index=False,
                )
            )
            progress.update(len(users[s : s + batch]))
    table = pa.concat_tables(parts)
    out = Layout(paths.artifacts).recommendations / "ranked_recommendations.parquet"
    with atomic_file(out) as tmp:
        pq.write_table(table, tmp)
    figures = {
        "users": len(users),
        "rows": table.num_rows,
        "k": config.k,
        "n_candidates": config.n_candidates,
        "ranker_version": ranker.version,
        "retriever_version": rec.version,
        "distinct_items_recommended": len(set(table["item_id"].to_pylist())),
        "path": str(out),
    }
    mlflow.log(context, "ranked_recommendations", {k: v for k, v in figures.items() if isinstance(v, (int, float))})
    return dg.MaterializeResult(metadata=figures_metadata(figures))
