import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._config import to_library
from assets.splits.config import VocabularyConfig
from models.splits.rules import VocabularyRules
from assets.reporting import figures_metadata, log_figures, md_table, table_metadata
from orchestration.versions import WAREHOUSE_POOL, code_version
from models.splits.build import build_vocabularies
from orchestration.resources import MlflowTracker


@dg.asset(
    deps=["interaction_splits", "clean_items"],
    kinds={"duckdb"},
    owners=["team:recsys"],
    tags={"layer": "gold"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def vocabularies(
    context: dg.AssetExecutionContext, config: VocabularyConfig, duckdb: DuckDBResource, mlflow: MlflowTracker
) -> dg.MaterializeResult:
    """User, item, category and title-token vocabularies from the train split only, with a
    frequency floor and hash buckets (indices 1..num_buckets) for unseen or rare keys."""
    params = to_library(config, VocabularyRules).sql_params()
    with duckdb.get_connection() as con:
        sql, fingerprint = build_vocabularies(con, params)
        sizes = con.execute(
            "SELECT vocabulary, count(*), sum(count) FROM vocabularies GROUP BY 1 ORDER BY 1"
        ).fetchall()
        table = table_metadata(con, "vocabularies")
    figures = {f"{v}_size": n for v, n, _ in sizes}
    figures.update({"num_buckets": config.num_buckets, "fingerprint": fingerprint})
    for name in ("user_id", "item_id", "category", "title_token"):
        figures.setdefault(f"{name}_size", 0)
    context.log.info(
        "vocabularies: " + ", ".join(f"{v}={n:,}" for v, n, _ in sizes) + f"; fingerprint {fingerprint[:12]}"
    )
    log_figures(context, mlflow, "vocabularies", figures, params={"vocabulary_fingerprint": fingerprint})
    return dg.MaterializeResult(
        metadata=figures_metadata(
            figures,
            sql={"vocabularies": sql},
            tables={"sizes": md_table(sizes, ("vocabulary", "keys", "train interactions covered"))},
        )
        | table
    )
