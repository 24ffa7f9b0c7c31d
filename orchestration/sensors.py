"""Sensors on the landing folders.

- `new_items_sensor`: a new or changed file in landing/items/ requests
  `incremental_item_embedding_job` (ingest and clean the catalog, embed only new or changed
  items with the current checkpoint, upsert them into the index; no retraining). The cursor
  holds every file's (size, sha256, mtime), and the run key is derived from the new files, so
  the same file never triggers twice.
- `new_events_sensor`: a new or changed file in landing/events/ records an observation of
  `landing_events` with a new data version, which marks `raw_events` (and, once re-ingested,
  everything downstream) stale; the retrain (the assets' `on_cron` condition,
  orchestration/automation.py) picks it up. With one partition per landing file
  (`TOWERFLOW_EVENT_PARTITIONS=files`, orchestration/partitions.py) it adds the partitions of
  landed files that have none and requests one run of the event assets for them alone; a replaced
  file (same path, other bytes) keeps its partition and requests one run over every partition,
  as its cleaning is a full re-clean.

A sensor never calls new what the ingest already read: a file counts as new only when neither
its cursor nor the ledger (the file states `raw_events` / `raw_items` publish on their latest
materialization, `ingested_files` in their metadata) holds its content. So on a fresh home
after `make demo` the sensors' first ticks launch nothing and observe nothing, and a file a
manual run ingested between two ticks is not reported after the fact. The ledger is read from
the Dagster instance, not the warehouse: a sensor never opens the DuckDB file a run may hold.

"New or changed" is the ingest ledger's rule (models/ingest/changes.py): other bytes, not
another mtime, so a touched file triggers nothing; size and mtime only spare re-hashing an
unchanged file on every tick.
"""

import hashlib
import json

import dagster as dg

from assets.ingest._ingest import LEDGER_KEY
from models.ingest.changes import FileState, changed, dump_states, fingerprint, load_states, same_content, scan
from models.ingest.landing import EVENTS, ITEMS, LandingKind
from models.retrieval.checkpoint import champion_version
from orchestration.jobs import incremental_item_embedding_job
from orchestration.partitions import EVENT_ASSETS, partition_range, unpartitioned_files
from orchestration.resources import MlflowTracker, TowerflowPaths


def _known(cursor: str | None) -> dict[str, FileState]:
    # a cursor from before the sha256 rule ("size:mtime_ns" per file) is read as empty: its
    # files count as new once, as the fingerprint format changed with it
    return load_states(json.loads(cursor) if cursor else None)


def _cursor(files: dict[str, FileState]) -> str:
    return json.dumps(dump_states(files), sort_keys=True)


def ingested(instance: dg.DagsterInstance, kind: LandingKind) -> dict[str, FileState]:
    """The ledger as the raw table's latest materialization published it, or, when that is a
    partition's (which does not repeat it), the run's observation (empty if none)."""
    key = dg.AssetKey(kind.table)
    event = instance.get_latest_materialization_event(key)
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    if LEDGER_KEY not in meta:
        observed = instance.fetch_observations(key, limit=1).records
        meta = observed[0].asset_observation.metadata if observed else {}
    return load_states(meta[LEDGER_KEY].value if LEDGER_KEY in meta else None)


def _new_files(context, paths: TowerflowPaths, kind: LandingKind) -> tuple[dict, dict, dict]:
    """(the cursor's files, the folder's files, the new or changed ones: in neither the cursor
    nor the ledger)."""
    known = _known(context.cursor)
    files = scan(paths.landing / kind.name, known)
    new = changed(files, known)
    if new:
        ledger = ingested(context.instance, kind)
        new = {k: v for k, v in new.items() if not same_content(v, ledger.get(k))}
    return known, files, new


def _nothing_new(known: dict, files: dict, message: str):
    """A skip; files touched since the cursor (same bytes, another mtime) get their new mtime
    recorded, so they are not hashed again on every tick."""
    touched = {k: v for k, v in files.items() if known.get(k) != v}
    if not touched:
        return dg.SkipReason(message)
    return dg.SensorResult(skip_reason=message, cursor=_cursor({**known, **touched}))


def _observation(asset: str, files: dict) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=asset, metadata={"files": len(files)}, tags={"dagster/data_version": fingerprint(files)}
    )


@dg.sensor(
    job=incremental_item_embedding_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New or changed catalog files in landing/items/ -> embed and index only those items.",
)
def new_items_sensor(context: dg.SensorEvaluationContext, paths: TowerflowPaths):
    known, files, new = _new_files(context, paths, ITEMS)
    if not new:
        return _nothing_new(known, files, f"no new files in landing/items/ ({len(files)} seen)")
    if not champion_version(paths.artifacts):
        # cursor not advanced: these files trigger once a model is promoted
        return dg.SkipReason(f"{len(new)} new item file(s), but no promoted model yet: run the whole graph first")
    run_key = hashlib.sha256(_cursor(new).encode()).hexdigest()[:16]
    context.log.info(f"new item files: {sorted(new)}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"items-{run_key}", tags={"towerflow/new_item_files": ",".join(sorted(new))[:200]})
        ],
        asset_events=[_observation("landing_items", files)],
        cursor=_cursor(files),
    )


def build_new_events_sensor(partitions_def: dg.DynamicPartitionsDefinition | None = None) -> dg.SensorDefinition:
    """`new_events_sensor`: observations only (unpartitioned events), or, with one partition per
    landing file (orchestration/partitions.py), the partitions of new files and a run for them."""
    if partitions_def is not None:
        return _partitioned_events_sensor(partitions_def)

    @dg.sensor(
        name="new_events_sensor",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="New or changed event files in landing/events/ -> mark raw_events stale (no run).",
    )
    def new_events_sensor(context: dg.SensorEvaluationContext, paths: TowerflowPaths):
        known, files, new = _new_files(context, paths, EVENTS)
        if not new:
            return _nothing_new(known, files, f"no new files in landing/events/ ({len(files)} seen)")
        context.log.info(f"new event files: {sorted(new)}")
        return dg.SensorResult(asset_events=[_observation("landing_events", files)], cursor=_cursor(files))

    return new_events_sensor


def _partitioned_events_sensor(partitions_def: dg.DynamicPartitionsDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name="new_events_sensor",
        target=dg.AssetSelection.assets(*EVENT_ASSETS),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="A landed event file without a partition -> its partition, and one run that ingests and "
        "cleans the new partitions; a replaced file -> a run over every partition (a full re-clean).",
    )
    def new_events_sensor(context: dg.SensorEvaluationContext, paths: TowerflowPaths):
        known, files, new = _new_files(context, paths, EVENTS)
        have = context.instance.get_dynamic_partitions(partitions_def.name)
        added = unpartitioned_files(context.instance, files)
        ledger = ingested(context.instance, EVENTS)
        # a file the ledger holds with other bytes: the ingest supersedes its rows, so every file's
        # outcome may change (its rows were the kept copies of later duplicates): all partitions
        replaced = sorted(k for k in new if k in ledger and k in have)
        if not added and not replaced:
            return _nothing_new(known, files, f"no new files in landing/events/ ({len(files)} seen)")
        keys = [*have, *added] if replaced else added
        run_key = hashlib.sha256(_cursor({k: files[k] for k in keys if k in files}).encode()).hexdigest()[:16]
        target = {"partition_key": keys[0]} if len(keys) == 1 else {"tags": partition_range(keys[0], keys[-1])}
        context.log.info(f"event files: {len(added)} new {added[:5]}, {len(replaced)} replaced {replaced[:5]}")
        return dg.SensorResult(
            dynamic_partitions_requests=[partitions_def.build_add_request(added)] if added else [],
            run_requests=[
                dg.RunRequest(
                    run_key=f"events-{run_key}",
                    asset_selection=[dg.AssetKey(k) for k in EVENT_ASSETS],
                    **target,
                )
            ],
            asset_events=[_observation("landing_events", files)],
            cursor=_cursor(files),
        )

    return new_events_sensor


new_events_sensor = build_new_events_sensor()


@dg.sensor(
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Housekeeping, no runs: marks FAILED the runs whose process is gone (kill -9, "
    "reboot) and frees their warehouse pool slot, so the queue and the automated retrain go on; "
    "gives the warehouse pool its limit on an instance that has none.",
)
def dead_run_sweep(context: dg.SensorEvaluationContext, mlflow: MlflowTracker):
    from orchestration.instance import ensure_warehouse_pool, fail_dead_runs

    limit = ensure_warehouse_pool(context.instance)
    dead = fail_dead_runs(context.instance)
    for d in dead:
        context.log.warning(f"run {d.run_id} ({d.job_name}) marked failed: {d.reason}")
        ended = mlflow.end_dagster_run(d.run_id, "KILLED")  # its process never closed its MLflow run
        if ended:
            context.log.warning(f"MLflow run {ended} of Dagster run {d.run_id} marked KILLED")
    return dg.SkipReason(
        f"{len(dead)} dead run(s) marked failed"
        + (f": {', '.join(d.run_id[:8] for d in dead)}" if dead else "")
        + f"; warehouse pool limit {limit}"
    )
