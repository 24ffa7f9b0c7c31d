"""The landing folders as observable source assets: their data version is a fingerprint of the
files there (path, size, sha256: models/ingest/changes.py), so a new or changed file makes the
raw table built from them stale in Dagster. The sensors in orchestration/sensors.py record the
observations."""

import dagster as dg

from models.ingest.changes import fingerprint, scan
from models.ingest.landing import EVENTS, ITEMS
from orchestration.resources import TowerflowPaths


def _observe(paths: TowerflowPaths, kind) -> dict:
    files = scan(paths.landing / kind.name)
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
