import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._config import to_library
from assets.serving.config import IndexConfig
from assets.reporting import content_version, figures_metadata
from orchestration.versions import WAREHOUSE_POOL, code_version
from models.artifacts import Layout
from models.index.embeddings import refresh_index
from models.index.item_index import IndexSpec
from models.index.settings import IndexRefresh
from models.retrieval.champion import load_champion
from models.retrieval.inference import sample_users, user_vectors_of
from orchestration.resources import MlflowTracker, TowerflowPaths


# in the pool: tuning reads real user vectors, which opens the warehouse
@dg.asset(
    deps=["item_embeddings"],
    kinds={"faiss"},
    owners=["team:recsys"],
    tags={"layer": "serving"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def item_index(
    context: dg.AssetExecutionContext,
    config: IndexConfig,
    paths: TowerflowPaths,
    duckdb: DuckDBResource,
    mlflow: MlflowTracker,
) -> dg.MaterializeResult:
    """FAISS index over item_embeddings keyed by row_id: a main segment (IndexIDMap2(IndexFlatIP)
    up to exact_max items, IVF-Flat above; HNSW on request) plus an exact delta segment for rows
    added since its build; rows that left the table are tombstoned in main. Rebuilt once delta +
    tombstones pass rebuild_share. Each ANN build tunes its search setting on real user vectors
    (recorded in the manifest, served with). Folders are published atomically by manifest.json."""

    def tune_queries():  # only called by a full ANN build: (n, d) champion vectors of real users
        with duckdb.get_connection() as con:
            model = load_champion(con, paths.artifacts).model
            return user_vectors_of(con, model, sample_users(con, config.tune_sample, salt="tune"))

    idx, stats = refresh_index(
        Layout(paths.artifacts).index,
        Layout(paths.artifacts).embeddings,
        to_library(config, IndexSpec),
        rebuild_share=config.rebuild_share,
        full=config.full,
        tune_queries=tune_queries if config.tune else None,
        tune_target=to_library(config, IndexRefresh).tune_target,
        log=context.log.info,
    )
    figures = {
        **stats,
        "index_type": idx.kind,
        "ntotal": idx.ntotal,
        "dim": idx.manifest["dim"],
        "changed_share": round(idx.changed_share(), 6),
        "model_version": idx.manifest["model_version"],
        "build": idx.manifest["build"],
        "delta_folder": idx.manifest["delta"],
        "search": idx.manifest.get("search", {}).get("setting", "exact" if idx.kind == "flat" else "untuned"),
    }
    mlflow.log(
        context,
        "item_index",
        {k: v for k, v in figures.items() if isinstance(v, (int, float))},
        params={"index_type": idx.kind, "search": figures["search"]},
    )
    m = idx.manifest  # its segments' digests: an upsert of nothing keeps the version
    return dg.MaterializeResult(
        metadata=figures_metadata(figures),
        data_version=content_version(
            context, m["main_sha256"], m["delta_sha256"], m.get("stale"), m["embeddings_sha256"], figures["search"]
        ),
    )
