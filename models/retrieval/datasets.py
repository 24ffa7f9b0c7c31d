"""The warehouse tables a training read, as MLflow datasets (for `log_inputs`): name, source,
schema and a digest computed by DuckDB over every row, so two trainings on the same data show
the same digest in the MLflow UI and a changed split shows a new one.

The digest is DuckDB's 64-bit `hash` of each row combined order-independently (xor and sum),
plus the row count: one scan, no data copied out of the warehouse, cheap at 10M rows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# (dataset name, MLflow input context, table, filter): what two_tower_model reads
TRAINING_INPUTS = (
    ("interaction_splits[train]", "training", "interaction_splits", "split = 'train'"),
    ("interaction_splits[valid]", "validation", "interaction_splits", "split = 'valid'"),
    ("interaction_splits[test]", "test", "interaction_splits", "split = 'test'"),
    ("clean_items", "catalog", "clean_items", "true"),
)


def table_digest(con, table: str, where: str = "true") -> tuple[str, int]:
    """(16-hex digest, row count) of the rows of `table` matching `where`."""
    n, x, s = con.execute(
        f"SELECT count(*), bit_xor(hash(t)), sum(hash(t) % 1000003) FROM {table} AS t WHERE {where}"
    ).fetchone()
    return hashlib.sha256(f"{n}:{x}:{s}".encode()).hexdigest()[:16], int(n)


def _schema(con, table: str):
    from mlflow.types import ColSpec, DataType, Schema

    kinds = {
        "VARCHAR": DataType.string,
        "BIGINT": DataType.long,
        "INTEGER": DataType.integer,
        "DOUBLE": DataType.double,
        "FLOAT": DataType.float,
        "BOOLEAN": DataType.boolean,
        "TIMESTAMP": DataType.datetime,
        "TIMESTAMP WITH TIME ZONE": DataType.datetime,
    }
    cols = con.execute(f"DESCRIBE {table}").fetchall()
    return Schema([ColSpec(kinds[c[1]], c[0]) for c in cols if c[1] in kinds])


def warehouse_datasets(con, database: str | Path, inputs=TRAINING_INPUTS) -> list[tuple[object, str, int]]:
    """[(mlflow MetaDataset, context, rows)] for the warehouse tables of `inputs`."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    source = resolve_dataset_source(Path(database).resolve().as_uri())
    out = []
    for name, context, table, where in inputs:
        digest, rows = table_digest(con, table, where)
        out.append((MetaDataset(source, name=name, digest=digest, schema=_schema(con, table)), context, rows))
    return out
