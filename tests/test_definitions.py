"""The code location loads and shows exactly what DESIGN.md promises: asset keys and groups, the
lineage, the checks and which of them block, what each job selects, what the sensors (the
automation sensor among them: the retrain is declared on the assets) target, the resources every
step asks for, the warehouse pool and code versions.
Each assertion compares against the whole expected set, so a renamed asset, a lost dep, a check
that stops blocking or a job that selects one asset too many fails here."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster_duckdb import DuckDBResource

from orchestration.versions import WAREHOUSE_POOL, code_version
from orchestration.resources import MlflowTracker, TowerflowPaths

EXPECTED_GROUPS = {
    "landing_events": "ingest",
    "landing_items": "ingest",
    "raw_events": "ingest",
    "raw_items": "ingest",
    "clean_interactions": "clean",
    "quarantined_events": "clean",
    "clean_items": "clean",
    "interaction_splits": "splits",
    "vocabularies": "splits",
    "two_tower_model": "training",
    "model_evaluation": "training",
    "promoted_model": "training",
    "ab_test_report": "abtest",
    "item_embeddings": "serving",
    "item_index": "serving",
    "batch_recommendations": "serving",
    "user_histories": "serving",
    "action_labels": "ranking",
    "ranking_candidates": "ranking",
    "ranking_model": "ranking",
    "ranking_evaluation": "ranking",
    "promoted_ranker": "ranking",
    "ranked_recommendations": "ranking",
    "item_semantic_ids": "generative",
    "generative_retriever": "generative",
    "generative_evaluation": "generative",
    "promoted_generative": "generative",
}
EXPECTED_PARENTS = {
    "landing_events": set(),
    "landing_items": set(),
    "raw_events": {"landing_events"},
    "raw_items": {"landing_items"},
    "clean_interactions": {"raw_events"},
    "quarantined_events": {"raw_events"},
    "clean_items": {"raw_items"},
    "interaction_splits": {"clean_interactions"},
    "vocabularies": {"interaction_splits", "clean_items"},
    "two_tower_model": {"vocabularies", "interaction_splits", "clean_items", "clean_interactions"},
    "model_evaluation": {"two_tower_model"},
    # the champion moves by the offline rule, or by the online A/B test's decision while one runs
    "promoted_model": {"model_evaluation", "ab_test_report"},
    "ab_test_report": {"clean_interactions"},
    "item_embeddings": {"promoted_model", "clean_items"},
    "item_index": {"item_embeddings"},
    "batch_recommendations": {"item_index"},
    "user_histories": {"interaction_splits"},
    # retrieve -> rank: candidates come from the champion retriever
    "action_labels": {"clean_interactions"},
    "ranking_candidates": {"action_labels", "promoted_model", "interaction_splits"},
    "ranking_model": {"ranking_candidates"},
    # every family: train -> evaluate (blocking check) -> promote; what serves reads the promoted one
    "ranking_evaluation": {"ranking_model"},
    "promoted_ranker": {"ranking_evaluation"},
    "ranked_recommendations": {"promoted_ranker", "item_index"},
    "item_semantic_ids": {"item_embeddings"},
    "generative_retriever": {"item_semantic_ids", "interaction_splits"},
    "generative_evaluation": {"generative_retriever", "promoted_model"},
    "promoted_generative": {"generative_evaluation"},
}
# (asset, check) -> blocking: the checks that guard the splits, training and the index block
EXPECTED_CHECKS = {
    ("raw_events", "raw_events_files_readable"): False,
    ("raw_items", "raw_items_files_readable"): False,
    ("raw_events", "raw_file_lines_accounted"): True,
    ("raw_items", "raw_item_file_lines_accounted"): True,  # so the incremental item job audits its files
    ("clean_interactions", "event_row_accounting"): True,
    ("clean_interactions", "event_file_accounting"): True,
    ("clean_items", "item_row_accounting"): True,
    ("clean_interactions", "clean_interactions_expectations"): False,
    ("interaction_splits", "split_no_time_leakage"): True,
    ("interaction_splits", "split_eval_users_have_history"): True,
    ("interaction_splits", "interaction_splits_expectations"): True,
    ("model_evaluation", "beats_popularity_on_valid_ndcg"): True,
    ("ab_test_report", "ab_test_users_in_one_arm"): True,
    ("ab_test_report", "challenger_wins_ab_test"): True,
    ("item_index", "item_index_recall_at_10"): True,
    ("ranking_evaluation", "ranking_beats_retrieval_on_valid_ndcg"): True,
    ("item_semantic_ids", "every_item_has_a_unique_semantic_id"): True,
    ("generative_retriever", "generative_codes_are_unique"): True,
    ("generative_evaluation", "generative_beats_chance_on_valid_hr"): True,
}
SOURCES = {"landing_events", "landing_items"}
DATA = {
    "raw_events",
    "raw_items",
    "clean_interactions",
    "quarantined_events",
    "clean_items",
    "interaction_splits",
    "vocabularies",
}
EXPECTED_JOBS = {
    "all_assets_job": set(EXPECTED_GROUPS) - SOURCES,
    "data_job": DATA,
    "training_job": {"two_tower_model", "model_evaluation", "promoted_model"},
    "incremental_item_embedding_job": {
        "raw_items",
        "clean_items",
        "item_embeddings",
        "item_index",
        "item_semantic_ids",
    },  # no training
}


@pytest.fixture(scope="module")
def defs(tmp_path_factory):
    from orchestration.definitions import build_definitions

    return build_definitions(tmp_path_factory.mktemp("home"))


def _name(key) -> str:
    return key.to_user_string()


def test_asset_keys_groups_and_lineage(defs):
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert {_name(k): graph.get(k).group_name for k in keys} == EXPECTED_GROUPS
    assert {_name(k): {_name(p) for p in graph.get(k).parent_keys} for k in keys} == EXPECTED_PARENTS
    assert {_name(k) for k in keys if not graph.get(k).is_materializable} == SOURCES


def test_checks_and_which_of_them_block(defs):
    graph = defs.resolve_asset_graph()
    specs = [graph.get_check_spec(k) for k in graph.asset_check_keys]
    assert {(_name(c.asset_key), c.name): c.blocking for c in specs} == EXPECTED_CHECKS


def test_jobs_select_exactly_their_assets(defs):
    assert {j.name for j in defs.jobs} == set(EXPECTED_JOBS)
    for name, expected in EXPECTED_JOBS.items():
        job = defs.resolve_job_def(name)
        assert {_name(k) for k in job.asset_layer.executable_asset_keys} == expected, name
    # the in-process executor: one process per run, so the DuckDB file has one opener per run
    assert defs.resolve_job_def("all_assets_job").executor_def.name == "in_process"


def test_any_asset_with_its_upstream_can_be_selected(defs):
    """`dagster asset materialize --select '*ASSET'` builds a job for every asset: no multi-asset
    refuses to be subset (clean_events once raised DagsterInvalidSubsetError for '*vocabularies')."""
    graph = defs.resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        selection = dg.AssetSelection.from_string(f"*{_name(key)}")
        job = dg.define_asset_job(f"upstream_of_{_name(key)}", selection=selection)
        resolved = job.resolve(asset_graph=graph)
        assert key in resolved.asset_layer.executable_asset_keys, _name(key)


def test_sensors_and_automation_target_the_right_jobs(defs):
    assert {s.name for s in defs.sensors} == {
        "automation_sensor",
        "new_items_sensor",
        "new_events_sensor",
        "dead_run_sweep",
    }
    items = defs.resolve_sensor_def("new_items_sensor")
    assert items.job_name == "incremental_item_embedding_job"
    assert items.default_status == dg.DefaultSensorStatus.RUNNING
    events = defs.resolve_sensor_def("new_events_sensor")
    assert not events.has_jobs  # it records observations (stale raw data); the automation conditions retrain
    automation = defs.resolve_sensor_def("automation_sensor")
    assert automation.asset_selection == dg.AssetSelection.all()
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING
    assert not list(defs.schedules or [])


def test_resources_point_at_the_home_and_cover_every_step(defs, tmp_path):
    res = defs.resources
    assert isinstance(res["duckdb"], DuckDBResource) and isinstance(res["mlflow"], MlflowTracker)
    home = Path(res["paths"].home)
    assert isinstance(res["paths"], TowerflowPaths) and Path(res["duckdb"].database) == home / "warehouse.duckdb"
    assert res["mlflow"].tracking_uri == f"sqlite:///{home / 'mlflow.db'}"
    provided = set(res) | {"io_manager"}
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).assets_def.required_resource_keys <= provided, _name(key)
    for checks in defs.asset_checks:
        assert checks.required_resource_keys <= provided, [c.name for c in checks.check_specs]


def test_every_step_that_opens_the_warehouse_is_in_its_pool(defs):
    # DuckDB allows one process on the file, readers included: a step that takes the duckdb resource
    # and sits outside the pool could collide with another run's writer
    graph = defs.resolve_asset_graph()
    steps = {graph.get(k).assets_def for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}
    steps |= set(defs.asset_checks)
    pooled = {s.node_def.name for s in steps if s.node_def.pool == WAREHOUSE_POOL}
    opens = {s.node_def.name for s in steps if "duckdb" in s.required_resource_keys}
    assert opens == pooled
    assert {
        "raw_events",
        "clean_events",
        "two_tower_model",
        "item_embeddings",
        "item_index_item_index_recall_at_10",
    } <= pooled


def test_every_asset_has_a_code_version_that_follows_its_code(defs):
    graph = defs.resolve_asset_graph()
    versions = {
        _name(k): graph.get(k).code_version for k in graph.get_all_asset_keys() if graph.get(k).is_materializable
    }
    assert all(versions.values()), versions
    # one step, one version (the two relations of the cleaning step share theirs); the rest all differ
    assert versions["clean_interactions"] == versions["quarantined_events"]
    assert len(set(versions.values())) == len(versions) - 1
    # each is derived from the module that defines the asset (tests/test_code_versions.py tests
    # the walk), none written by hand
    derived = {
        _name(k): code_version(getattr(a.op.compute_fn, "decorated_fn", a.op.compute_fn).__module__)
        for a in defs.assets
        if a.is_materializable
        for k in a.keys
    }
    assert derived == versions


def test_the_warehouse_memory_limit_follows_the_machine_unless_given(tmp_path, monkeypatch):
    from orchestration.resources import DUCKDB_MIN_MEMORY_MIB, duckdb_resource, machine_memory_bytes

    def same_as_given(expected_bytes: int) -> bool:  # what the warehouse's DuckDB connection holds
        with duckdb_resource(tmp_path).get_connection() as con:
            text = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        number, unit = text.split()  # e.g. "5.8 GiB": one decimal, cut rather than rounded
        scale = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}[unit]
        return 0 <= expected_bytes / scale - float(number) < 0.1

    monkeypatch.delenv("TOWERFLOW_DUCKDB_MEMORY", raising=False)
    assert same_as_given(max(DUCKDB_MIN_MEMORY_MIB * 2**20, machine_memory_bytes() // 4))
    monkeypatch.setenv("TOWERFLOW_DUCKDB_MEMORY", "700MiB")  # given: it wins
    assert same_as_given(700 * 2**20)
