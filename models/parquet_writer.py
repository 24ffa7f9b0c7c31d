"""Batched work written as one Parquet file: a table built batch by batch (each batch as Arrow),
with progress in the log, then written atomically (a reader never sees half a file)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from models.artifacts import atomic_file
from models.progress import Progress


def write_batches(
    out: Path,
    total: int,
    batch: int,
    make: Callable[[int, int], pa.Table | pd.DataFrame],
    progress: Progress | None = None,
) -> pa.Table:
    """`make(start, stop)` for each batch of [0, total); the concatenated table is written to
    `out` and returned. Batches must agree on their schema; a DataFrame's index is dropped."""
    parts = []
    for start in range(0, total, batch):
        stop = min(total, start + batch)
        part = make(start, stop)
        parts.append(part if isinstance(part, pa.Table) else pa.Table.from_pandas(part, preserve_index=False))
        if progress is not None:
            progress.update(stop - start)
    if not parts:
        raise ValueError(f"nothing to write to {out}: no rows to batch (total {total})")
    table = pa.concat_tables(parts)
    with atomic_file(Path(out)) as tmp:
        pq.write_table(table, tmp)
    return table
