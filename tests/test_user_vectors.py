"""Known users' vectors are computed once per (model, catalog, histories) and served from a cache:
the cached vector is the user tower's, a request reads it, and a reload that changes the model
answers with the new model's vectors (a tiny home built with the library calls the assets make)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest

from models.index.embeddings import refresh_embeddings, refresh_index
from models.index.item_index import IndexSpec
from models.retrieval.checkpoint import save_checkpoint, update_manifest
from models.retrieval.data import WarehouseShape, load_for_tower, tower_config_for
from models.retrieval.histories import write_user_histories
from models.retrieval.training import TrainConfig, config_dict, train
from models.serving.snapshot import load_snapshot
from models.sources.synthetic import generate
from models.splits.warehouse import build_warehouse, default_warehouse_params


def publish(home: Path, seed: int) -> str:
    """Train a model with `seed`, promote it and publish its embeddings and index."""
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    try:
        fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
        tower = tower_config_for(WarehouseShape.read(con))
        data = load_for_tower(con, tower)
        tcfg = TrainConfig(epochs=1, batch_size=128, seed=seed)
        model = train(data.catalog, data.train, tower, tcfg, valid=None, log=lambda m: None).model
        models = home / "artifacts" / "models"
        path = save_checkpoint(models, model, config_dict(tower, tcfg), fingerprint)
        update_manifest(models, latest=path.name, current=path.name)
        art = home / "artifacts"
        refresh_embeddings(con, art / "embeddings", model, path.name, fingerprint)
        refresh_index(art / "index", art / "embeddings", IndexSpec())
        if not (art / "user_histories").exists():
            write_user_histories(con, art / "user_histories")
    finally:
        con.close()
    return path.name


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("user-vectors")
    generate(home / "landing", n_users=120, n_items=100, n_events=4000, dirty_share=0.0, seed=5, log=lambda m: None)
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    build_warehouse(con, home / "landing", **default_warehouse_params())
    con.close()
    publish(home, seed=0)
    return home


def test_the_cached_vector_is_the_towers_and_a_request_reads_it(home):
    core = load_snapshot(home / "artifacts").core
    rows = np.arange(len(core.histories))
    assert core.user_cache.filled.all()  # computed when the snapshot loads
    core.user_cache.filled[:] = False
    assert core.warm_user_vectors() == len(rows) and core.user_cache.filled.all()
    np.testing.assert_allclose(core.user_vectors(rows), core.tower_user_vectors(rows), atol=1e-6)
    user = str(core.user_ids[3])
    before = core.answer([{"user_id": user, "k": 5}])[0]
    # a known user's request without recent items searches with the cached vector, no tower run:
    # the vector turned around gives the items furthest from the tower's
    core.user_cache.vectors[3] *= -1
    swapped = core.answer([{"user_id": user, "k": 5}])[0]
    assert [i["item_id"] for i in swapped["items"]] != [i["item_id"] for i in before["items"]]
    # recent items still go through the tower over history + recent items
    with_recent = core.answer([{"user_id": user, "k": 5, "recent_items": [core.catalog.item_ids[0]]}])[0]
    assert with_recent["source"] == "user" and len(with_recent["items"]) == 5


def test_a_reload_to_another_model_answers_with_the_new_models_vectors(home):
    art = home / "artifacts"
    old = load_snapshot(art)
    again = load_snapshot(art, previous=old)
    assert again.core.user_cache is old.core.user_cache  # same model, catalog and histories: kept
    users = [str(u) for u in old.core.user_ids[:20]]
    asked = [{"user_id": u, "k": 5} for u in users]
    old_answers = old.recommend(asked)  # fills the old cache
    publish(home, seed=1)
    new = load_snapshot(art, previous=old)
    assert new.version != old.version and new.core.user_cache is not old.core.user_cache
    fresh = load_snapshot(art)  # no previous snapshot: nothing to reuse
    got, want = new.recommend(asked), fresh.recommend(asked)
    assert [[i["item_id"] for i in a["items"]] for a in got] == [[i["item_id"] for i in a["items"]] for a in want]
    assert [[i["item_id"] for i in a["items"]] for a in got] != [
        [i["item_id"] for i in a["items"]] for a in old_answers
    ]
    rows = np.arange(len(new.core.histories))
    np.testing.assert_allclose(new.core.user_vectors(rows), new.core.tower_user_vectors(rows), atol=1e-6)
