"""Event data partitioned per landing file (TOWERFLOW_EVENT_PARTITIONS=files,
orchestration/partitions.py): the partitions of the landed files, materialized, give the tables an
unpartitioned run gives; each partition's materialization carries its file's row accounting; a
new file is one new partition that the sensor adds and runs alone; a replaced file re-cleans
every partition. Real DuckDB files, real Dagster instances and materializations."""

from __future__ import annotations

import warnings
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from orchestration.definitions import build_definitions
from orchestration.partitions import EVENT_ASSETS, EVENT_FILES, SETTING, event_partitions, partition_range
from tests.conftest import HEADER, write
from tests.test_incremental_cleaning import DAY_1, DAY_2, LATE_DAY_1, contents

FILES = {"day-1.csv": DAY_1, "day-2.csv": DAY_2, "late/day-1.csv": LATE_DAY_1}
CHECKS = {
    "raw_file_lines_accounted",
    "raw_events_files_readable",
    "event_row_accounting",
    "event_file_accounting",
    "clean_interactions_expectations",
}


def _event_defs(defs: dg.Definitions) -> list:
    """The event assets and their checks, as the definitions hold them."""
    keys = {dg.AssetKey(k) for k in EVENT_ASSETS}
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and set(a.keys) & keys]
    checks = [c for c in defs.asset_checks if {s.name for s in c.check_specs} & CHECKS]
    return [*assets, *checks]


def _run(defs, instance, **target) -> dg.ExecuteInProcessResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dg.materialize(
            _event_defs(defs), resources=defs.resources, instance=instance, raise_on_error=False, **target
        )


def _request(defs, instance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """What the daemon launches for a sensor's run request: its assets (and their checks), its
    partition or partition range."""
    return _run(
        defs, instance, selection=request.asset_selection, tags=request.tags, partition_key=request.partition_key
    )


def _tick(defs, instance, cursor=None):
    sensor = defs.resolve_sensor_def("new_events_sensor")
    with dg.build_sensor_context(cursor=cursor, resources={"paths": defs.resources["paths"]}, instance=instance) as ctx:
        result = sensor(ctx)
    for request in getattr(result, "dynamic_partitions_requests", None) or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def _tables(home: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return contents(con)


def _land(home: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        write(home / "landing", f"events/{rel}", text)


def _by_partition(result, asset: str) -> dict[str, dict]:
    return {
        e.materialization.partition: {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.to_user_string() == asset
    }


def _unpartitioned_tables(home: Path, files: dict[str, str]) -> dict[str, list[tuple]]:
    _land(home, files)
    defs = build_definitions(home, event_partitions=None)
    assert _run(defs, dg.DagsterInstance.ephemeral()).success
    return _tables(home)


def test_the_setting_is_read_in_one_place(monkeypatch):
    monkeypatch.delenv(SETTING, raising=False)
    assert event_partitions() is None
    monkeypatch.setenv(SETTING, "files")
    assert event_partitions() is EVENT_FILES
    monkeypatch.setenv(SETTING, "days")
    with pytest.raises(ValueError, match=f"{SETTING}='days'.*'files'"):
        event_partitions()


def test_the_partitions_of_three_files_equal_the_unpartitioned_pass(tmp_path):
    expected = _unpartitioned_tables(tmp_path / "plain", FILES)

    home = tmp_path / "parts"
    _land(home, FILES)
    defs = build_definitions(home, event_partitions=EVENT_FILES)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(EVENT_FILES.name, sorted(FILES))
    result = _run(defs, instance, tags=partition_range("day-1.csv", "late/day-1.csv"))
    assert result.success
    assert {e.check_name for e in result.get_asset_check_evaluations() if e.passed} == CHECKS
    assert _tables(home) == expected
    assert sum(1 for _ in expected["clean_interactions"]) == 8  # 4 from day 1, 3 from day 2, 1 late

    # each partition's materialization carries its file's accounting (the counts as in
    # tests/test_incremental_cleaning.py): day 1 kept e1 e2 e3 and the id-less row, 1 duplicate,
    # 2 quarantined; day 2 3 / 4 / 5; the late file 1 / 1 / 1
    clean = _by_partition(result, "clean_interactions")
    figures = {
        k: (m["file_raw_rows"], m["file_clean_rows"], m["file_duplicate_rows"], m["file_quarantined_rows"])
        for k, m in clean.items()
    }
    assert figures == {"day-1.csv": (7, 4, 1, 2), "day-2.csv": (12, 3, 4, 5), "late/day-1.csv": (3, 1, 1, 1)}
    assert {k: m["dagster/row_count"] for k, m in clean.items()} == {
        "day-1.csv": 4,
        "day-2.csv": 3,
        "late/day-1.csv": 1,
    }
    quarantined = _by_partition(result, "quarantined_events")
    assert {k: m["dagster/row_count"] for k, m in quarantined.items()} == {
        "day-1.csv": 2,
        "day-2.csv": 5,
        "late/day-1.csv": 1,
    }
    raw = _by_partition(result, "raw_events")
    assert {k: (m["dagster/row_count"], m["file_status"]) for k, m in raw.items()} == {
        "day-1.csv": (7, "loaded"),
        "day-2.csv": (12, "loaded"),
        "late/day-1.csv": (3, "loaded"),
    }
    # the ledger (what the sensors read) goes once a run, not on every partition's event
    assert not any("ingested_files" in m for m in raw.values())
    (observed,) = instance.fetch_observations(dg.AssetKey("raw_events"), limit=5).records
    assert set(observed.asset_observation.metadata["ingested_files"].value) == set(FILES)
    # the UI's partitions view: every partition materialized
    assert instance.get_materialized_partitions(dg.AssetKey("clean_interactions")) == set(FILES)


def test_the_sensor_adds_a_new_file_as_one_partition_and_runs_it_alone(tmp_path):
    home = tmp_path / "parts"
    _land(home, {k: FILES[k] for k in ("day-1.csv", "day-2.csv")})
    defs = build_definitions(home, event_partitions=EVENT_FILES)
    instance = dg.DagsterInstance.ephemeral()

    first = _tick(defs, instance)
    assert instance.get_dynamic_partitions(EVENT_FILES.name) == ["day-1.csv", "day-2.csv"]
    (request,) = first.run_requests
    assert request.partition_key_range == dg.PartitionKeyRange("day-1.csv", "day-2.csv")
    assert set(request.asset_selection) == {dg.AssetKey(k) for k in EVENT_ASSETS}
    assert _request(defs, instance, request).success
    assert isinstance(_tick(defs, instance, first.cursor), dg.SkipReason)

    _land(home, {"late/day-1.csv": LATE_DAY_1})  # a late file for an old day
    second = _tick(defs, instance, first.cursor)
    assert instance.get_dynamic_partitions(EVENT_FILES.name) == ["day-1.csv", "day-2.csv", "late/day-1.csv"]
    (request,) = second.run_requests
    assert request.partition_key == "late/day-1.csv" and request.run_key != first.run_requests[0].run_key
    result = _request(defs, instance, request)
    assert result.success
    # that file alone was ingested and cleaned; only its partitions were materialized
    assert {
        (e.materialization.asset_key.to_user_string(), e.materialization.partition)
        for e in result.get_asset_materialization_events()
    } == {(k, "late/day-1.csv") for k in EVENT_ASSETS}
    raw = _by_partition(result, "raw_events")["late/day-1.csv"]
    assert (raw["new_files"], raw["skipped_files"], raw["new_rows"]) == (1, 0, 3)
    clean = _by_partition(result, "clean_interactions")["late/day-1.csv"]
    assert (clean["cleaning_mode"], clean["files_cleaned"], clean["new_raw_rows"]) == ("incremental", 1, 3)
    assert (clean["file_clean_rows"], clean["file_duplicate_rows"], clean["file_quarantined_rows"]) == (1, 1, 1)
    # its row landed in its day, and the tables are the unpartitioned pass's
    assert _tables(home) == _unpartitioned_tables(tmp_path / "plain", FILES)
    assert isinstance(_tick(defs, instance, second.cursor), dg.SkipReason)


def test_a_replaced_file_re_cleans_every_partition(tmp_path):
    home = tmp_path / "parts"
    _land(home, FILES)
    defs = build_definitions(home, event_partitions=EVENT_FILES)
    instance = dg.DagsterInstance.ephemeral()
    first = _tick(defs, instance)
    assert _request(defs, instance, first.run_requests[0]).success

    # day 2 rewritten without its copies of day 1: the partition stays, every partition re-cleans
    rewritten = {**FILES, "day-2.csv": HEADER + "e10,u1,i1,click,2024-01-02T10:00:00Z,\n"}
    _land(home, rewritten)
    second = _tick(defs, instance, first.cursor)
    assert not second.dynamic_partitions_requests
    assert instance.get_dynamic_partitions(EVENT_FILES.name) == sorted(FILES)
    (request,) = second.run_requests
    assert request.partition_key_range == dg.PartitionKeyRange("day-1.csv", "late/day-1.csv")
    result = _request(defs, instance, request)
    assert result.success
    clean = _by_partition(result, "clean_interactions")
    assert {m["cleaning_mode"] for m in clean.values()} == {"full"}
    assert "day-2.csv" in clean["day-2.csv"]["cleaning_why"]
    # day 2 no longer holds copies of day 1's rows; the late file's e7 and e6 (a duplicate and a
    # losing content of day 2's before) have nothing in day 2 to lose to now: all 3 rows kept
    assert (clean["day-2.csv"]["file_raw_rows"], clean["day-2.csv"]["file_clean_rows"]) == (1, 1)
    assert clean["late/day-1.csv"]["file_clean_rows"] == 3
    assert _tables(home) == _unpartitioned_tables(tmp_path / "plain", rewritten)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT duplicate_count FROM clean_interactions WHERE event_id = 'e1'").fetchall() == [(0,)]


def test_the_switch_partitions_the_event_assets_alone(tmp_path):
    """With the setting, the event assets are partitioned per file, cleaned in single runs, and left
    to their sensor; the rest of the graph, unpartitioned, keeps its retrain on the cron, which no
    longer waits for the event assets. Without it, nothing is partitioned (the quick start's '*')."""
    graph = build_definitions(tmp_path, event_partitions=EVENT_FILES).resolve_asset_graph()
    partitioned = {k.to_user_string() for k in graph.materializable_asset_keys if graph.get(k).partitions_def}
    assert partitioned == set(EVENT_ASSETS)
    for key in EVENT_ASSETS:
        node = graph.get(dg.AssetKey(key))
        assert node.partitions_def == EVENT_FILES and node.automation_condition is None
        assert node.backfill_policy == dg.BackfillPolicy.single_run()
    assert {graph.get(dg.AssetKey(k)).group_name for k in EVENT_ASSETS} == {"ingest", "clean"}
    assert graph.get(dg.AssetKey("interaction_splits")).automation_condition.get_label() == "on_cron(0 3 * * *, UTC)"
    plain = build_definitions(tmp_path, event_partitions=None).resolve_asset_graph()
    assert not any(plain.get(k).partitions_def for k in plain.materializable_asset_keys)


def test_the_cron_tick_retrains_on_what_is_clean_without_requesting_partitions(tmp_path):
    """In partition mode the retrain's tick requests the unpartitioned graph, at once, whether or
    not a file landed; the event partitions are the sensor's to request (never the tick's)."""
    from datetime import datetime, timedelta, timezone

    defs = build_definitions(tmp_path, event_partitions=EVENT_FILES)
    graph = defs.resolve_asset_graph()
    t = datetime(2026, 12, 7, 2, 50, tzinfo=timezone.utc)  # ten minutes before the 03:00 UTC tick
    with dg.instance_for_test() as instance, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        instance.add_dynamic_partitions(EVENT_FILES.name, ["day-1.csv"])
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=t)
        assert not first.total_requested
        tick = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, evaluation_time=t + timedelta(minutes=11), cursor=first.cursor
        )
        requested = {k.to_user_string() for k in graph.materializable_asset_keys if tick.get_num_requested(k)}
        assert requested == {k.to_user_string() for k in graph.materializable_asset_keys} - set(EVENT_ASSETS)


def test_a_partition_whose_file_left_the_folder_keeps_its_rows(tmp_path):
    """A landed file removed after its ingest (rotated away) keeps its rows, as unpartitioned; a
    re-clean of every partition still runs, and a partition naming a file never landed fails with
    its name."""
    home = tmp_path / "parts"
    _land(home, {k: FILES[k] for k in ("day-1.csv", "day-2.csv")})
    defs = build_definitions(home, event_partitions=EVENT_FILES)
    instance = dg.DagsterInstance.ephemeral()
    first = _tick(defs, instance)
    assert _request(defs, instance, first.run_requests[0]).success
    (home / "landing" / "events" / "day-1.csv").unlink()
    _land(home, {"day-2.csv": HEADER + "e10,u1,i1,click,2024-01-02T10:00:00Z,\n"})
    (request,) = _tick(defs, instance, first.cursor).run_requests
    assert request.partition_key_range == dg.PartitionKeyRange("day-1.csv", "day-2.csv")
    result = _request(defs, instance, request)
    assert result.success
    clean = _by_partition(result, "clean_interactions")
    assert (clean["day-1.csv"]["file_clean_rows"], clean["day-2.csv"]["file_clean_rows"]) == (4, 1)

    instance.add_dynamic_partitions(EVENT_FILES.name, ["never-landed.csv"])
    failed = _run(defs, instance, partition_key="never-landed.csv")
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.is_step_failure]
    assert "never-landed.csv" in str(failure.step_failure_data.error)


def test_the_cli_adds_the_landed_files_partitions_once(tmp_path, monkeypatch):
    """`towerflow event-partitions`, for a shell without the daemon: the landed files' partitions
    on the instance at DAGSTER_HOME, in path order, and the command that runs them."""
    from click.testing import CliRunner

    from orchestration.cli import main

    _land(tmp_path, {"day-2.csv": DAY_2, "day-1.csv": DAY_1})
    monkeypatch.setenv("TOWERFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.delenv(SETTING, raising=False)
    off = CliRunner().invoke(main, ["event-partitions"])
    assert off.exit_code == 2 and f"set {SETTING}=files" in off.output
    monkeypatch.setenv(SETTING, "files")
    out = CliRunner().invoke(main, ["event-partitions"])
    assert out.exit_code == 0, out.output
    assert "2 event file partition(s) added, 2 in all" in out.output
    assert "--partition-range 'day-1.csv...day-2.csv'" in out.output
    _land(tmp_path, {"late/day-1.csv": LATE_DAY_1})
    again = CliRunner().invoke(main, ["event-partitions"])
    assert "1 event file partition(s) added, 3 in all" in again.output
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        assert instance.get_dynamic_partitions(EVENT_FILES.name) == ["day-1.csv", "day-2.csv", "late/day-1.csv"]
