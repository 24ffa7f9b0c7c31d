import time

import dagster as dg
import numpy as np
import pyarrow.parquet as pq

from assets.config import IndexConfig
from assets.reporting import figures_metadata
from models.checkpoint import write_json_atomic
from models.index import IndexSpec, build_index, write_index_atomic
from models.serving import file_sha256
from orchestration.resources import MlflowTracker, TowerflowPaths


def load_embeddings(paths) -> tuple[np.ndarray, np.ndarray, dict]:
    """(item ids, (N, d) vectors, the embeddings manifest) as item_embeddings wrote them."""
    import json

    path = paths.artifacts / "embeddings" / "item_embeddings.parquet"
    table = pq.read_table(path)
    d = table.schema.field("vector").type.list_size
    xb = table["vector"].combine_chunks().flatten().to_numpy().reshape(-1, d)
    manifest = json.loads(path.with_name("manifest.json").read_text())
    return np.asarray(table["item_id"].to_pylist(), dtype=object), xb.astype(np.float32), manifest


@dg.asset(deps=["item_embeddings"], kinds={"faiss"}, owners=["team:recsys"], tags={"layer": "serving"})
def item_index(context: dg.AssetExecutionContext, config: IndexConfig, paths: TowerflowPaths,
               mlflow: MlflowTracker) -> dg.MaterializeResult:
    """FAISS IndexIDMap2 over the item embeddings (ids = row numbers of item_embeddings): exact
    Flat up to exact_max items, HNSW or IVF above; written atomically with a manifest."""
    item_ids, xb, emb = load_embeddings(paths)
    spec = IndexSpec(kind=config.kind, exact_max=config.exact_max, hnsw_m=config.hnsw_m,
                     ef_search=config.ef_search, nprobe=config.nprobe)
    t0 = time.perf_counter()
    index, params = build_index(xb, np.arange(len(xb), dtype=np.int64), spec)
    folder = paths.artifacts / "index"
    write_index_atomic(index, folder / "items.faiss")
    manifest = {"model_version": emb["model_version"], "vocabulary_fingerprint": emb["vocabulary_fingerprint"],
                "embeddings_sha256": emb["sha256"], "dim": int(xb.shape[1]), "count": int(len(xb)),
                "index_type": params["type"], "params": {k: v for k, v in params.items()
                                                         if k not in ("type", "d", "count", "build_seconds")},
                "build_seconds": round(time.perf_counter() - t0, 3), "sha256": file_sha256(folder / "items.faiss")}
    write_json_atomic(folder / "manifest.json", manifest)
    context.log.info(f"item_index: {params['type']} over {len(xb):,} items in {manifest['build_seconds']} s")
    mlflow.log(context, "item_index", {"count": len(xb), "build_seconds": manifest["build_seconds"]},
               params={"index_type": params["type"]})
    return dg.MaterializeResult(metadata=figures_metadata(
        {"index_type": params["type"], "count": len(xb), "dim": int(xb.shape[1]),
         "build_seconds": manifest["build_seconds"], "model_version": emb["model_version"],
         "path": str(folder / "items.faiss")}))
