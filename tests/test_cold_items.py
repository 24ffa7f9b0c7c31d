"""Cold items by content: an item id the train split never saw is embedded with its id part
zero (the path id dropout trains), never through hash buckets trained for other items, on
every path: the catalog rule itself, item_embeddings, the incremental item job and the CLI.

The graph is materialized for real (DuckDB file, MLflow store, Dagster, FAISS) on tiny
synthetic data in a temp TOWERFLOW_HOME; expected vectors are recomputed from the champion
checkpoint with the id part switched off explicitly (`with_id=False`), and each test also
checks that the hashed-id path would have given another answer, so none can pass vacuously.
"""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from models.retrieval.data import hash_buckets, load_catalog
from models.sources.synthetic import generate

pytestmark = pytest.mark.slow


def _trained_ids(con) -> set:
    """The train split's item ids, read straight from the split (not through the rule's code)."""
    return {
        r[0] for r in con.execute("SELECT DISTINCT item_id FROM interaction_splits WHERE split = 'train'").fetchall()
    }


def _champion(home):
    from models.retrieval.checkpoint import champion_version, load_checkpoint

    version = champion_version(home / "artifacts")
    model, _, _ = load_checkpoint(home / "artifacts" / "models" / version)
    return model


@torch.no_grad()
def _vectors(model, con, items: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(content-only, full, hashed-id) item vectors of `items` from the checkpoint, in order:
    the id part off; the id part as the catalog gives it; every id forced through its hash buckets."""
    t = model.cfg
    catalog, _, _ = load_catalog(con, n_hashes=t.n_hashes, item_buckets=t.item_buckets, only=items)
    feats = catalog.features(torch.as_tensor(catalog.index_of(items)))
    hashed = {
        **feats,
        "id_hash": torch.as_tensor(hash_buckets(np.asarray(items, dtype=object), t.n_hashes, t.item_buckets)),
    }
    return (model.item(feats, with_id=False).numpy(), model.item(feats).numpy(), model.item(hashed).numpy())


def _table(home) -> dict:
    df = pq.read_table(home / "artifacts" / "embeddings" / "items").to_pandas()
    return dict(zip(df["item_id"], (np.asarray(v, np.float32) for v in df["vector"])))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    import os

    home = tmp_path_factory.mktemp("cold_home")
    generate(home / "landing", n_users=200, n_items=150, n_events=8000, dirty_share=0.0, seed=7, log=lambda m: None)
    os.environ["TOWERFLOW_HOME"] = str(home)
    from orchestration.definitions import build_definitions

    defs = build_definitions(home)
    graph = defs.resolve_asset_graph()  # the retrieval half: ranking and generative are not under test here
    retrieval = [
        k
        for k in graph.get_all_asset_keys()
        if graph.get(k).is_materializable
        and graph.get(k).group_name in ("ingest", "clean", "splits", "training", "serving")
    ]
    run = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=retrieval,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        run_config={"ops": {"two_tower_model": {"config": {"epochs": 2, "encoder": "mean", "batch_size": 128}}}},
    )
    assert run.success
    return home, defs


def test_the_catalog_gives_never_trained_ids_no_hash_and_the_tower_no_id_part(home):
    """The rule itself: only train-split ids keep their hash buckets; a cold item's vector does
    not move when every id embedding is rewritten, a trained item's does."""
    home, _ = home
    model = _champion(home)
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    t = model.cfg
    catalog, _, _ = load_catalog(con, n_hashes=t.n_hashes, item_buckets=t.item_buckets)
    trained = np.isin(catalog.item_ids, list(_trained_ids(con)))
    con.close()
    assert trained.any() and (~trained).any(), "the tiny data must hold trained and never-trained items"
    assert np.array_equal(catalog.trained, trained)
    id_hash = catalog.id_hash[:-1].numpy()
    assert (id_hash[~trained] == 0).all()
    assert np.array_equal(id_hash[trained], hash_buckets(catalog.item_ids[trained], t.n_hashes, t.item_buckets))
    from models.retrieval.evaluation import item_vectors

    before = item_vectors(model, catalog).numpy()
    with torch.no_grad():
        model.item.ids.table.weight.normal_(std=1.0)  # every id bucket rewritten
    after = item_vectors(model, catalog).numpy()
    assert np.allclose(before[~trained], after[~trained], atol=1e-6)
    assert not np.allclose(before[trained], after[trained], atol=1e-3)


def test_item_embeddings_embed_never_trained_items_by_content_alone(home):
    home, _ = home
    model = _champion(home)
    table = _table(home)
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    trained = _trained_ids(con)
    cold = sorted(set(table) - trained)
    warm = sorted(set(table) & trained)[:20]
    content, full, hashed = _vectors(model, con, cold)
    con.close()
    got = np.stack([table[i] for i in cold])
    np.testing.assert_allclose(got, content, atol=1e-5)
    np.testing.assert_allclose(full, content, atol=1e-6)
    # the hashed path would have given other vectors: this test fails if cold items take it again
    assert np.abs(got - hashed).max(axis=1).min() > 1e-3
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    w_content, w_full, w_hashed = _vectors(model, con, warm)
    con.close()
    got_warm = np.stack([table[i] for i in warm])
    np.testing.assert_allclose(got_warm, w_full, atol=1e-5)
    np.testing.assert_allclose(w_full, w_hashed, atol=1e-6)  # trained ids keep their id part
    assert np.abs(got_warm - w_content).max(axis=1).min() > 1e-3


def test_incremental_job_embeds_copies_under_new_ids_by_their_content(home):
    """Copies of trained items under new ids, embedded by the sensor's job: exactly their
    sources' content-only vectors (same content, id part zero)."""
    home, defs = home
    model = _champion(home)
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    trained = sorted(_trained_ids(con))
    sources = con.execute(
        """SELECT item_id, title, array_to_string(categories, '|') FROM clean_items
                             WHERE item_id IN (SELECT unnest($ids)) ORDER BY item_id LIMIT 5""",
        {"ids": trained},
    ).fetchall()
    con.close()
    lines = "".join(f'copy-{s},"{title}",{cats}\n' for s, title, cats in sources)
    (home / "landing" / "items" / "copies.csv").write_text("item_id,title,categories\n" + lines)
    run = defs.resolve_job_def("incremental_item_embedding_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert run.success
    meta = run.asset_materializations_for_node("item_embeddings")[0].metadata
    assert (meta["mode"].value, meta["added"].value) == ("incremental", len(sources))
    table = _table(home)
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    src_content, src_full, _ = _vectors(model, con, [s for s, _, _ in sources])
    copies = [f"copy-{s}" for s, _, _ in sources]
    _, _, copy_hashed = _vectors(model, con, copies)
    con.close()
    got = np.stack([table[c] for c in copies])
    np.testing.assert_allclose(got, src_content, atol=1e-5)
    assert np.abs(got - copy_hashed).max(axis=1).min() > 1e-3  # not the hashed-id path
    assert np.abs(got - src_full).max(axis=1).min() > 1e-3  # the sources keep their ids


def test_cli_recommend_reads_never_trained_history_items_by_content(home, monkeypatch):
    """`towerflow recommend` builds a user's vector from their history: a never-trained item in
    it is represented by content alone. The CLI's scores match a user vector recomputed with
    that item's id part off, and not one recomputed through its hash buckets."""
    from orchestration.cli import main

    home, _ = home
    model = _champion(home)
    t = model.cfg
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    trained = _trained_ids(con)
    pairs = con.execute("SELECT user_id, item_id, ts FROM interaction_splits ORDER BY user_id, ts, item_id").df()
    last = pairs.groupby("user_id").tail(t.history_len)
    cold_users = sorted(set(last.loc[~last["item_id"].isin(trained), "user_id"]))
    assert cold_users, "the tiny data must hold a user with a never-trained item in their recent history"
    user = cold_users[0]
    history = last.loc[last["user_id"] == user, "item_id"].tolist()  # oldest first, latest last
    catalog, _, _ = load_catalog(con, n_hashes=t.n_hashes, item_buckets=t.item_buckets, only=history)
    con.close()
    monkeypatch.setenv("TOWERFLOW_HOME", str(home))
    out = CliRunner().invoke(main, ["recommend", "--user", user, "-k", "5", "--format", "json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert len(rows) == 5 and not any(r["fallback"] for r in rows)
    table = _table(home)
    xb = np.stack([table[r["item_id"]] for r in rows])
    scores = np.array([r["score"] for r in rows])

    @torch.no_grad()
    def user_vector(cold_by_content: bool) -> np.ndarray:
        feats = catalog.features(torch.as_tensor(catalog.index_of(history)))
        if not cold_by_content:
            feats["id_hash"] = torch.as_tensor(
                hash_buckets(np.asarray(history, dtype=object), t.n_hashes, t.item_buckets)
            )
        reps = model.item.represent(feats)  # (L', h)
        is_cold = torch.as_tensor([i not in trained for i in history])
        if cold_by_content:  # the cold items' representation with the id part off, stated explicitly
            reps[is_cold] = model.item.represent({k: v[is_cold] for k, v in feats.items()}, with_id=False)
        L = t.history_len
        items = reps.new_zeros(1, L, reps.shape[-1])
        items[0, L - len(history) :] = reps
        mask = torch.zeros(1, L, dtype=torch.bool)
        mask[0, L - len(history) :] = True
        uh = torch.as_tensor(hash_buckets(np.asarray([user], dtype=object), t.n_hashes, t.user_buckets))
        return model.user(uh, items, mask).numpy()[0]

    np.testing.assert_allclose(xb @ user_vector(True), scores, atol=1e-4)
    assert np.abs(xb @ user_vector(False) - scores).max() > 1e-4
