"""Partitioned event data, a deployment switch: `TOWERFLOW_EVENT_PARTITIONS=files` gives
`raw_events` and the `clean_events` step (clean_interactions, quarantined_events) one dynamic
partition per landing file of landing/events/; unset, they are unpartitioned, as the quick start
needs (`dagster asset materialize --select '*'` refuses a selection that holds a partitioned
asset without `--partition`).

Why per file, not per event day: the file is the unit of everything underneath (the ingest
ledger reads, skips and supersedes files, line accounting and quarantine name the file, cleaning
goes file by file with per-file row accounting in `cleaned_event_files`), and a file is not a
day (a MovieLens import is one file over years, the service rotates its log by size). A late
file for an old day is one new partition whose rows land in their day.

A partition's key is the file's path under landing/events/ (`day-1.csv`, `late/day-1.csv`),
the key the sensors' cursors and the ledger's published files use. Partitions are cleaned in
file order, several in one run (`BackfillPolicy.single_run()`): cleaning is not independent per
file (the kept copy of a duplicate is the earliest in ingest order). `new_events_sensor` adds the
partitions of new files and requests the run (orchestration/sensors.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

SETTING = "TOWERFLOW_EVENT_PARTITIONS"
# The partitions' name in the Dagster instance (where dynamic partitions live).
EVENT_FILES = dg.DynamicPartitionsDefinition(name="event_files")
# What a partitioned run of the event assets selects: the ingest and the one cleaning step.
EVENT_ASSETS = ("raw_events", "clean_interactions", "quarantined_events")
MODES = {"files": EVENT_FILES, "": None, "none": None}


def event_partitions() -> dg.DynamicPartitionsDefinition | None:
    """The event assets' partitions as the environment sets them: EVENT_FILES or None."""
    value = os.environ.get(SETTING, "").strip().lower()
    if value not in MODES:
        raise ValueError(
            f"{SETTING}={value!r}: expected 'files' (one partition per landing file) or unset (no partitions)"
        )
    return MODES[value]


def partition_files(context: dg.AssetExecutionContext) -> list[str] | None:
    """The landing files (paths under landing/events/) a partitioned run targets, in partition
    order; None in an unpartitioned run (every new file)."""
    if context.assets_def.partitions_def is None:
        return None
    return list(context.partition_keys)


def unpartitioned_files(instance: dg.DagsterInstance, files: Iterable[str]) -> list[str]:
    """The landed files (paths under landing/events/) that have no partition yet, in path order:
    the order an unpartitioned ingest reads them, so partition order is ingest order."""
    return sorted(set(files) - set(instance.get_dynamic_partitions(EVENT_FILES.name)))


def launch_command(first: str, last: str) -> str:
    """The shell command that ingests and cleans the partitions first...last in one run."""
    assets = ",".join(EVENT_ASSETS)
    return f"dg launch -m orchestration.definitions --assets '{assets}' --partition-range '{first}...{last}'"


def partition_range(first: str, last: str) -> dict[str, str]:
    """The run tags of one run over the partitions first...last (the assets' single-run backfill
    policy cleans them in one pass)."""
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}
