import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from dagster_duckdb import DuckDBResource

from assets.reporting import figures_metadata
from assets.serving._current import current_model
from models.checkpoint import write_json_atomic
from models.serving import embed_items, file_sha256
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset(deps=["model_evaluation"], kinds={"parquet", "pytorch"}, owners=["team:recsys"], tags={"layer": "serving"})
def item_embeddings(context: dg.AssetExecutionContext, paths: TowerflowPaths, duckdb: DuckDBResource,
                    mlflow: MlflowTracker) -> dg.MaterializeResult:
    """Parquet of item_id, vector, model_version, content_hash for every catalog item, items never
    seen in training included (embedded through their content features and id bucket)."""
    with duckdb.get_connection() as con:
        cur = current_model(con, paths)
        hashes = dict(con.execute("SELECT item_id, content_hash FROM clean_items").fetchall())
    xb = embed_items(cur.model, cur.catalog)  # (N, d)
    n, d = xb.shape
    table = pa.table({
        "item_id": pa.array(cur.catalog.item_ids.tolist(), pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(xb.ravel(), pa.float32()), d),
        "model_version": pa.array([cur.version] * n, pa.string()),
        "content_hash": pa.array([hashes.get(i) for i in cur.catalog.item_ids], pa.string()),
    })
    out = paths.artifacts / "embeddings" / "item_embeddings.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(out)  # same folder: atomic
    write_json_atomic(out.with_name("manifest.json"), {"model_version": cur.version, "count": n, "dim": d,
                                                        "vocabulary_fingerprint": cur.fingerprint,
                                                        "sha256": file_sha256(out)})
    figures = {"items": n, "dim": d, "items_without_catalog_row": int(sum(h is None for h in table["content_hash"].to_pylist())),
               "mean_norm": float(np.linalg.norm(xb, axis=1).mean()), "model_version": cur.version, "path": str(out)}
    mlflow.log(context, "item_embeddings", {k: v for k, v in figures.items() if isinstance(v, (int, float))})
    return dg.MaterializeResult(metadata=figures_metadata(figures))
