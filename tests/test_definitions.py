"""The code location loads and shows what DESIGN.md promises: groups, lineage, checks."""

from __future__ import annotations

import dagster as dg

EXPECTED_GROUPS = {
    "landing_events": "ingest", "landing_items": "ingest", "raw_events": "ingest", "raw_items": "ingest",
    "clean_interactions": "clean", "quarantined_events": "clean", "clean_items": "clean",
    "interaction_splits": "splits", "vocabularies": "splits",
    "two_tower_model": "training", "model_evaluation": "training",
    "item_embeddings": "serving", "item_index": "serving", "batch_recommendations": "serving",
    "item_semantic_ids": "generative", "generative_retriever": "generative", "generative_evaluation": "generative",
}


def test_definitions_load_with_groups_lineage_and_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("TOWERFLOW_HOME", str(tmp_path))
    from orchestration.definitions import build_definitions

    defs = build_definitions(tmp_path)
    graph = defs.resolve_asset_graph()
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups == EXPECTED_GROUPS
    parents = lambda name: {p.to_user_string() for p in graph.get(dg.AssetKey(name)).parent_keys}
    assert parents("clean_interactions") == {"raw_events"}
    assert parents("interaction_splits") == {"clean_interactions"}
    assert parents("vocabularies") == {"interaction_splits", "clean_items"}
    assert parents("model_evaluation") == {"two_tower_model"}
    assert parents("raw_events") == {"landing_events"} and parents("raw_items") == {"landing_items"}
    assert parents("item_embeddings") == {"model_evaluation", "clean_items"}
    assert parents("batch_recommendations") == {"item_index"}
    assert parents("item_semantic_ids") == {"item_embeddings"}
    assert parents("generative_evaluation") == {"generative_retriever", "model_evaluation"}

    specs = [graph.get_check_spec(k) for k in graph.asset_check_keys]
    checks = {(c.asset_key.to_user_string(), c.name): c.blocking for c in specs}
    # the checks that guard the splits (and what feeds them) are blocking
    for key in [("interaction_splits", "split_no_time_leakage"), ("interaction_splits", "split_eval_users_have_history"),
                ("interaction_splits", "interaction_splits_expectations"), ("clean_interactions", "event_row_accounting"),
                ("model_evaluation", "beats_popularity_on_valid_ndcg"), ("item_index", "item_index_recall_at_10"),
                ("item_semantic_ids", "every_item_has_a_unique_semantic_id")]:
        assert checks[key] is True, key
    assert ("clean_interactions", "clean_interactions_expectations") in checks
    assert ("raw_events", "raw_events_files_readable") in checks
    assert defs.resolve_job_def("all_assets_job") is not None
    incremental = defs.resolve_job_def("incremental_item_embedding_job")
    assert {k.to_user_string() for k in incremental.asset_layer.executable_asset_keys} == {
        "raw_items", "clean_items", "item_embeddings", "item_index", "item_semantic_ids"}  # no training in the sensor's path
    assert defs.resolve_sensor_def("new_items_sensor").job_name == "incremental_item_embedding_job"
    assert defs.resolve_sensor_def("new_events_sensor") is not None
    assert defs.resolve_schedule_def("retrain_schedule").job_name == "all_assets_job"
