import dagster as dg
from dagster_duckdb import DuckDBResource

from orchestration.versions import WAREHOUSE_POOL, code_version
from assets.ranking.config import RankingConfig
from assets.serving._recommendations import write_recommendations
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
        return write_recommendations(
            context,
            paths,
            mlflow,
            len(users),
            1024,
            lambda s, e: rank_users(con, rec, ranker, users[s:e], config.n_candidates, config.k),
            {
                "k": config.k,
                "n_candidates": config.n_candidates,
                "ranker_version": ranker.version,
                "retriever_version": rec.version,
            },
        )
