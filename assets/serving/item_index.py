import dagster as dg

from assets.config import IndexConfig
import models.index.embeddings as embeddings
import models.index.item_index as item_index_lib
from assets.reporting import figures_metadata
from assets.versions import code_version
from models.index.embeddings import refresh_index
from orchestration.resources import MlflowTracker, TowerflowPaths


# no pool: it reads the embeddings folder, never the warehouse
@dg.asset(deps=["item_embeddings"], kinds={"faiss"}, owners=["team:recsys"], tags={"layer": "serving"},
          code_version=code_version(__file__, embeddings, item_index_lib))
def item_index(context: dg.AssetExecutionContext, config: IndexConfig, paths: TowerflowPaths,
               mlflow: MlflowTracker) -> dg.MaterializeResult:
    """FAISS index over item_embeddings keyed by row_id: a main segment (IndexIDMap2(IndexFlatIP)
    up to exact_max items, IVF-Flat above; HNSW on request) plus an exact delta segment for rows
    added since its build; rows that left the table are tombstoned in main. Rebuilt once delta +
    tombstones pass rebuild_share. Folders are published atomically by manifest.json."""
    idx, stats = refresh_index(paths.artifacts / "index", paths.artifacts / "embeddings", config.spec(),
                               rebuild_share=config.rebuild_share, full=config.full, log=context.log.info)
    figures = {**stats, "index_type": idx.kind, "ntotal": idx.ntotal, "dim": idx.manifest["dim"],
               "changed_share": round(idx.changed_share(), 6), "model_version": idx.manifest["model_version"],
               "build": idx.manifest["build"], "delta_folder": idx.manifest["delta"]}
    mlflow.log(context, "item_index", {k: v for k, v in figures.items() if isinstance(v, (int, float))},
               params={"index_type": idx.kind})
    return dg.MaterializeResult(metadata=figures_metadata(figures))
