import dagster as dg

from assets.config import IndexConfig
from assets.reporting import figures_metadata
from models.embeddings import refresh_index
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset(deps=["item_embeddings"], kinds={"faiss"}, owners=["team:recsys"], tags={"layer": "serving"})
def item_index(context: dg.AssetExecutionContext, config: IndexConfig, paths: TowerflowPaths,
               mlflow: MlflowTracker) -> dg.MaterializeResult:
    """FAISS index over item_embeddings keyed by row_id: IndexIDMap2(IndexFlatIP) up to exact_max
    items, IndexIDMap2(HNSW) or IVF-Flat (which keeps ids itself) above. New rows are upserted (HNSW tombstones what it cannot remove) until the
    changes pass rebuild_share of the index; each version is a build folder published atomically
    by its manifest.json."""
    idx, stats = refresh_index(paths.artifacts / "index", paths.artifacts / "embeddings", config.spec(),
                               rebuild_share=config.rebuild_share, full=config.full, log=context.log.info)
    figures = {**stats, "index_type": idx.kind, "ntotal": int(idx.index.ntotal), "dim": idx.manifest["dim"],
               "model_version": idx.manifest["model_version"], "build": idx.manifest["build"]}
    mlflow.log(context, "item_index", {k: v for k, v in figures.items() if isinstance(v, (int, float))},
               params={"index_type": idx.kind})
    return dg.MaterializeResult(metadata=figures_metadata(figures))
