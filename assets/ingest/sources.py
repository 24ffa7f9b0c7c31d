"""The landing folders as observable source assets: their data version is a fingerprint of the
files there (path, size, sha256: models/ingest/changes.py), so a new or changed file makes the
raw table built from them stale in Dagster. The sensors in orchestration/sensors.py record the
observations."""

import warnings

import dagster as dg

from models.ingest.changes import fingerprint, scan
from models.ingest.landing import EVENTS, ITEMS
from orchestration.resources import TowerflowPaths


def _observe(paths: TowerflowPaths, kind) -> dict:
    files = scan(paths.landing / kind.name)
    return {"data_version": dg.DataVersion(fingerprint(files)), "metadata": {"files": len(files)}}


def _observe_landing(paths: TowerflowPaths):
    for kind in (EVENTS, ITEMS):
        yield dg.ObserveResult(asset_key=f"landing_{kind.name}", **_observe(paths, kind))


# a beta decorator, used knowingly: its notice would open every `make demo` and `make dev`
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    landing_files_observation = dg.multi_observable_source_asset(
        name="landing_files_observation",
        specs=[
            dg.AssetSpec(
                "landing_events", description="Event files under landing/events/ (CSV, JSONL, Parquet, gzip)."
            ),
            dg.AssetSpec("landing_items", description="Item catalog files under landing/items/."),
        ],
    )(_observe_landing)
