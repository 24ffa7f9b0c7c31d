"""The landing folders as observable source assets: their data version is a fingerprint of the
files there (path, size, mtime), so a new or changed file makes the raw table built from them
stale in Dagster. The sensors in orchestration/sensors.py record the observations."""

import hashlib
from pathlib import Path

import dagster as dg

from models.ingest.landing import EVENTS, ITEMS, discover
from orchestration.resources import TowerflowPaths


def landing_files(folder: Path) -> dict[str, str]:
    """{path relative to folder: "size:mtime_ns"} for every landed file."""
    out = {}
    for p in discover(folder):
        st = p.stat()
        out[p.relative_to(folder).as_posix()] = f"{st.st_size}:{st.st_mtime_ns}"
    return out


def fingerprint(files: dict[str, str]) -> str:
    return hashlib.sha256("\n".join(f"{k}\t{v}" for k, v in sorted(files.items())).encode()).hexdigest()[:24]


def _observe(paths: TowerflowPaths, kind) -> dict:
    files = landing_files(paths.landing / kind.name)
    return {"data_version": dg.DataVersion(fingerprint(files)), "metadata": {"files": len(files)}}


@dg.multi_observable_source_asset(
    specs=[
        dg.AssetSpec("landing_events", description="Event files under landing/events/ (CSV, JSONL, Parquet, gzip)."),
        dg.AssetSpec("landing_items", description="Item catalog files under landing/items/."),
    ]
)
def landing_files_observation(paths: TowerflowPaths):
    for kind in (EVENTS, ITEMS):
        yield dg.ObserveResult(asset_key=f"landing_{kind.name}", **_observe(paths, kind))
