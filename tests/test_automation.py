"""Sensors and the automation conditions: new landing files are seen once, new events make raw data
stale, the retrain runs the whole graph on its cron and the serving assets follow a promotion."""

from __future__ import annotations

import os
import warnings
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from orchestration.automation import RETRAIN_GRACE, SENSOR_NAME, longest_gap
from orchestration.definitions import build_definitions
from orchestration.sensors import new_events_sensor, new_items_sensor

EVENTS = "user_id,item_id,event_type,timestamp\nu1,i1,click,2024-01-01T00:00:00Z\n"


def _tick(sensor, defs, cursor=None, instance=None):
    with dg.build_sensor_context(
        cursor=cursor, resources={"paths": defs.resources["paths"]}, instance=instance
    ) as context:
        return sensor(context)


def test_new_items_sensor_waits_for_a_promoted_model_without_losing_the_file(tmp_path):
    defs = build_definitions(tmp_path)
    instance = dg.DagsterInstance.ephemeral()  # nothing ingested: every landed file is new
    (tmp_path / "landing" / "items").mkdir(parents=True)
    assert "no new files" in _tick(new_items_sensor, defs, instance=instance).skip_message
    (tmp_path / "landing" / "items" / "a.csv").write_text("item_id,title\ni1,One\n")
    skipped = _tick(new_items_sensor, defs, instance=instance)
    assert isinstance(skipped, dg.SkipReason) and "no promoted model" in skipped.skip_message
    # once a model is promoted the same file triggers exactly one run, then never again
    (tmp_path / "artifacts" / "models").mkdir(parents=True)
    (tmp_path / "artifacts" / "models" / "manifest.json").write_text('{"current": "v1", "latest": "v1"}')
    result = _tick(new_items_sensor, defs, instance=instance)
    assert len(result.run_requests) == 1 and new_items_sensor.job_name == "incremental_item_embedding_job"
    assert isinstance(_tick(new_items_sensor, defs, result.cursor, instance), dg.SkipReason)
    # a changed file is new again, under another run key
    (tmp_path / "landing" / "items" / "a.csv").write_text("item_id,title\ni1,One\ni2,Two\n")
    again = _tick(new_items_sensor, defs, result.cursor, instance)
    assert len(again.run_requests) == 1 and again.run_requests[0].run_key != result.run_requests[0].run_key
    # a touched file (same bytes, another mtime) is not new: the ingest ledger's rule; its new
    # mtime goes into the cursor so the next tick does not hash it again
    path = tmp_path / "landing" / "items" / "a.csv"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    touched = _tick(new_items_sensor, defs, again.cursor, instance)
    assert not touched.run_requests and "no new files" in touched.skip_reason.skip_message
    assert touched.cursor != again.cursor
    assert isinstance(_tick(new_items_sensor, defs, touched.cursor, instance), dg.SkipReason)


def test_new_event_files_mark_raw_events_stale(tmp_path):
    import assets.ingest.raw_events as raw_events_module

    defs = build_definitions(tmp_path)
    (tmp_path / "landing" / "events").mkdir(parents=True)
    (tmp_path / "landing" / "events" / "a.csv").write_text(EVENTS)
    with dg.instance_for_test() as instance:

        def stale() -> bool:
            # what the UI's "stale" means here, through the public instance API: the landing data
            # version raw_events was built from (recorded on its materialization) differs from the
            # one the sensor observed last
            built = instance.get_latest_materialization_event(dg.AssetKey("raw_events"))
            used = built.asset_materialization.tags["dagster/input_data_version/landing_events"]
            observed = instance.fetch_observations(dg.AssetKey("landing_events"), limit=1).records[0]
            return observed.asset_observation.tags["dagster/data_version"] != used

        first = _tick(new_events_sensor, defs, instance=instance)
        for event in first.asset_events:
            instance.report_runless_asset_event(event)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert dg.materialize([raw_events_module.raw_events], resources=defs.resources, instance=instance).success
        assert not stale()
        assert isinstance(_tick(new_events_sensor, defs, first.cursor, instance), dg.SkipReason)
        (tmp_path / "landing" / "events" / "b.csv").write_text(EVENTS.replace("u1", "u2"))
        second = _tick(new_events_sensor, defs, first.cursor, instance)
        assert not second.run_requests  # it marks; the on_cron condition retrains
        for event in second.asset_events:
            instance.report_runless_asset_event(event)
        assert stale()


def test_sensors_start_from_what_the_ledger_already_ingested(tmp_path):
    """A fresh home after a whole-graph run: the sensors' first ticks (no cursor yet) find the
    landed files in the ledger that raw_events / raw_items published, so they launch nothing and
    observe nothing; a file that lands afterwards is new, alone. An ingest that reads nothing new
    keeps its data version, so nothing downstream turns stale for it."""
    import assets.ingest.raw_events as raw_events_module
    import assets.ingest.raw_items as raw_items_module

    defs = build_definitions(tmp_path)
    (tmp_path / "landing" / "events").mkdir(parents=True)
    (tmp_path / "landing" / "items").mkdir(parents=True)
    (tmp_path / "landing" / "events" / "a.csv").write_text(EVENTS)
    (tmp_path / "landing" / "items" / "a.csv").write_text("item_id,title\ni1,One\n")
    (tmp_path / "artifacts" / "models").mkdir(parents=True)  # a promoted model: the sensor could launch
    (tmp_path / "artifacts" / "models" / "manifest.json").write_text('{"current": "v1", "latest": "v1"}')
    raw = [raw_events_module.raw_events, raw_items_module.raw_items]
    with dg.instance_for_test() as instance, warnings.catch_warnings():
        warnings.simplefilter("ignore")

        def versions() -> dict:
            return {
                k: instance.get_latest_materialization_event(dg.AssetKey(k)).asset_materialization.tags[
                    "dagster/data_version"
                ]
                for k in ("raw_events", "raw_items")
            }

        assert dg.materialize(raw, resources=defs.resources, instance=instance).success
        first = versions()
        for sensor in (new_items_sensor, new_events_sensor):
            result = _tick(sensor, defs, instance=instance)
            assert not result.run_requests and not result.asset_events, sensor.name
            assert "no new files" in result.skip_reason.skip_message
        # the same files ingested again (all skipped): the same data versions
        assert dg.materialize(raw, resources=defs.resources, instance=instance).success
        assert versions() == first
        cursor = _tick(new_items_sensor, defs, instance=instance).cursor
        (tmp_path / "landing" / "items" / "b.csv").write_text("item_id,title\ni2,Two\n")
        result = _tick(new_items_sensor, defs, cursor, instance)
        assert len(result.run_requests) == 1
        assert result.run_requests[0].tags["towerflow/new_item_files"] == "b.csv"
        assert dg.materialize(raw, resources=defs.resources, instance=instance).success
        assert versions()["raw_items"] != first["raw_items"] and versions()["raw_events"] == first["raw_events"]


def _labels(defs) -> dict[str, str]:
    graph = defs.resolve_asset_graph()
    return {k.to_user_string(): graph.get(k).automation_condition.get_label() for k in graph.materializable_asset_keys}


def test_the_retrain_is_declared_on_every_asset_on_a_configurable_cron(tmp_path, monkeypatch):
    defs = build_definitions(tmp_path)
    assert not list(defs.schedules or [])  # the cron is declared once, on the assets
    labels = _labels(defs)
    serving = {"item_embeddings", "item_index", "batch_recommendations", "user_histories"}
    assert {k for k, v in labels.items() if v == "on_cron(0 3 * * *) or eager"} == serving
    assert {v for k, v in labels.items() if k not in serving} == {"on_cron(0 3 * * *, UTC)"}
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING  # on with the daemon, as the schedule was
    monkeypatch.setenv("TOWERFLOW_RETRAIN_CRON", "30 1 * * 0")
    assert set(_labels(build_definitions(tmp_path)).values()) == {
        "on_cron(30 1 * * 0, UTC)",
        "on_cron(30 1 * * 0) or eager",
    }
    monkeypatch.setenv("TOWERFLOW_RETRAIN_CRON", "every day")
    with pytest.raises(ValueError, match="TOWERFLOW_RETRAIN_CRON"):
        build_definitions(tmp_path)


def test_what_users_read_has_a_freshness_policy_from_the_retrain_cron(tmp_path, monkeypatch):
    def policies(defs) -> dict:
        graph = defs.resolve_asset_graph()
        return {k.to_user_string(): graph.get(k).freshness_policy for k in graph.materializable_asset_keys}

    fresh = {k: p for k, p in policies(build_definitions(tmp_path)).items() if p is not None}
    assert set(fresh) == {"item_index", "batch_recommendations"}
    # daily retrain: warn a retrain period (+ the run's grace) after the last build, fail after two
    day = timedelta(days=1)
    windows = {(p.warn_window.to_timedelta(), p.fail_window.to_timedelta()) for p in fresh.values()}
    assert windows == {(day + RETRAIN_GRACE, 2 * day + RETRAIN_GRACE)}
    monkeypatch.setenv("TOWERFLOW_RETRAIN_CRON", "0 3 * * 1-5")  # weekdays: the weekend is the longest wait
    policy = policies(build_definitions(tmp_path))["item_index"]
    assert policy.warn_window.to_timedelta() == timedelta(days=3) + RETRAIN_GRACE
    assert longest_gap("*/10 * * * *") == timedelta(minutes=10)


def test_the_cron_tick_requests_the_whole_graph_at_once_and_serving_follows_a_promotion(tmp_path):
    """The conditions as the automation sensor evaluates them, on a real instance: nothing before
    the tick; at the tick every asset (one run); a retrain that built everything between two
    evaluations is not followed by a serving run; a promotion outside the retrain (training_job)
    re-serves exactly what reads the model; new splits refresh the histories; the new-items job's
    index update refreshes the batch recommendations."""
    defs = build_definitions(tmp_path)
    graph = defs.resolve_asset_graph()
    keys = graph.materializable_asset_keys
    t = datetime(2026, 12, 7, 2, 50, tzinfo=timezone.utc)  # ten minutes before the 03:00 UTC tick

    with dg.instance_for_test() as instance, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cursor = None

        def evaluate(at: datetime) -> set[str]:
            nonlocal cursor
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at, cursor=cursor)
            cursor = result.cursor
            return {k.to_user_string() for k in keys if result.get_num_requested(k)}

        def built(*names: str) -> None:
            for name in names:
                instance.report_runless_asset_event(dg.AssetMaterialization(name))

        assert evaluate(t) == set()
        assert evaluate(t + timedelta(minutes=5)) == set()
        assert evaluate(t + timedelta(minutes=11)) == {k.to_user_string() for k in keys}  # the tick
        built(*(k.to_user_string() for k in keys))  # the retrain's run, within one evaluation interval
        assert evaluate(t + timedelta(minutes=12)) == set()
        assert evaluate(t + timedelta(minutes=13)) == set()
        built("promoted_model")  # e.g. a training_job run promoted a new champion
        assert evaluate(t + timedelta(minutes=14)) == {"item_embeddings", "item_index", "batch_recommendations"}
        assert evaluate(t + timedelta(minutes=15)) == set()  # requested once
        built("interaction_splits")
        assert evaluate(t + timedelta(minutes=16)) == {"user_histories"}
        # the new-items job (its own run covers embeddings and index): the recommendations follow the index
        built("raw_items", "clean_items", "item_embeddings", "item_index", "item_semantic_ids")
        assert evaluate(t + timedelta(minutes=17)) == {"batch_recommendations"}
