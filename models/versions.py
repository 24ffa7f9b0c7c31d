"""What the Dagster UI needs to tell stale from fresh: a code version per asset, derived from
the code and SQL it runs, and the warehouse pool every step that opens the DuckDB file joins."""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

from models.sql import sql_text

# DuckDB lets one process open the warehouse file at a time (readers included), so every asset
# and check that opens it joins this pool; dagster.yaml (and orchestration/instance.py on any
# other instance) limit it to one slot across all runs.
WAREHOUSE_POOL = "warehouse"


def code_version(*code, sql: tuple[str, ...] | list[str] = ()) -> str:
    """A short sha256 over the source files of `code` (modules, functions or paths: the asset
    module and the library code it calls) and the text of sql/<name>.sql for each name: it
    changes exactly when what the asset computes changes, so Dagster marks it and its
    downstream assets stale after an edit, and not after a restart."""
    h = hashlib.sha256()
    files = sorted({Path(c if isinstance(c, (str, Path)) else inspect.getfile(c)).resolve() for c in code})
    for path in files:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for name in sorted(set(sql)):
        h.update(name.encode() + b"\0" + sql_text(name).encode() + b"\0")
    return h.hexdigest()[:16]
