"""The shell every batch-recommendations asset shares (batch_recommendations,
ranked_recommendations): per-user batches with progress, Arrow, one atomic Parquet file under
artifacts/recommendations/, the figures to Dagster metadata and MLflow. Each asset keeps only
how it answers a batch of users and the figures that are its own."""

from collections.abc import Callable

import dagster as dg
import pandas as pd
import pyarrow as pa

from assets.reporting import figures_metadata
from models.artifacts import Layout
from models.parquet_writer import write_batches
from models.progress import Progress


def write_recommendations(
    context: dg.AssetExecutionContext,
    paths,
    mlflow,
    users: int,
    batch: int,
    answer: Callable[[int, int], pa.Table | pd.DataFrame],
    figures: dict,
) -> dg.MaterializeResult:
    """`answer(start, stop)` for users [start, stop) of `users` -> rows with user_id, rank,
    item_id, score...; written to artifacts/recommendations/<asset>.parquet. `figures` (k, the
    versions used) join the common ones: users, rows, distinct items recommended, path."""
    name = context.asset_key.to_user_string()
    out = Layout(paths.artifacts).recommendations / f"{name}.parquet"
    table = write_batches(out, users, batch, answer, Progress(name, users, "users", context.log.info))
    figures = {
        "users": users,
        "rows": table.num_rows,
        **figures,
        "distinct_items_recommended": len(set(table["item_id"].to_pylist())),
        "path": str(out),
    }
    mlflow.log(context, name, {k: v for k, v in figures.items() if isinstance(v, (int, float))})
    return dg.MaterializeResult(metadata=figures_metadata(figures))
