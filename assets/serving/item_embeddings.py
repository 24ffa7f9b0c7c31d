import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.serving.config import EmbeddingConfig
from assets.reporting import content_version, figures_metadata
from orchestration.versions import WAREHOUSE_POOL, code_version
from models.artifacts import Layout, read_manifest
from models.index.embeddings import refresh_embeddings
from models.retrieval.champion import load_champion
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset(
    deps=["promoted_model", "clean_items"],
    kinds={"parquet", "pytorch"},
    owners=["team:recsys"],
    tags={"layer": "serving"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def item_embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingConfig,
    paths: TowerflowPaths,
    duckdb: DuckDBResource,
    mlflow: MlflowTracker,
) -> dg.MaterializeResult:
    """Parquet of row_id, item_id, vector, model_version, content_hash for every catalog item,
    items never seen in training included: an id outside the train split's item vocabulary is
    embedded by content alone (id part zero, the path id dropout trains). Under an unchanged
    model only new or changed items (by content hash) are embedded."""
    with duckdb.get_connection() as con:
        cur = load_champion(con, paths.artifacts)
        stats = refresh_embeddings(
            con,
            Layout(paths.artifacts).embeddings,
            cur.model,
            cur.version,
            cur.fingerprint,
            full=config.full,
            log=context.log.info,
        )
    figures = {**stats, "model_version": cur.version, "path": str(Layout(paths.artifacts).embeddings)}
    mlflow.log(context, "item_embeddings", {k: v for k, v in figures.items() if isinstance(v, (int, float))})
    # the table's own digest: an incremental run that embedded nothing keeps the version
    table_sha256 = read_manifest(Layout(paths.artifacts).embeddings)["sha256"]
    return dg.MaterializeResult(
        metadata=figures_metadata(figures), data_version=content_version(context, cur.version, table_sha256)
    )
