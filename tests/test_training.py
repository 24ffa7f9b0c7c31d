"""Training on planted synthetic data, checkpoints and the NaN guard (real DuckDB, real torch)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

from models.retrieval.checkpoint import (
    VocabularyMismatch,
    load_checkpoint,
    read_manifest,
    save_checkpoint,
    update_manifest,
)
from models.averaging import ema_every, ema_with_warmup
from models.retrieval.data import WarehouseShape, load_from_warehouse, load_refit_set, tower_config_for
from models.retrieval.evaluation import evaluate_model, evaluate_popularity
from models.sources.synthetic import generate
from models.retrieval.towers import WIDE_UP_TO_ITEMS, TowerConfig, TwoTower
from models.retrieval.training import (
    TrainConfig,
    TrainingDiverged,
    config_dict,
    full_catalog,
    refit,
    train,
    train_step,
)
from models.splits.warehouse import default_warehouse_params
from models.splits.warehouse import build_warehouse


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    """A warehouse built from planted synthetic data (real DuckDB file)."""
    root = tmp_path_factory.mktemp("planted")
    generate(root / "landing", n_users=400, n_items=300, n_events=40_000, n_clusters=8, seed=5, log=lambda m: None)
    with duckdb.connect(str(root / "w.duckdb")) as con:
        build_warehouse(con, root / "landing", **default_warehouse_params())
    return root / "w.duckdb"


@pytest.fixture(scope="module")
def data(planted):
    con = duckdb.connect(str(planted), read_only=True)
    tower = TowerConfig(
        dim=32,
        hidden=32,
        id_dim=16,
        history_len=10,
        item_buckets=601,
        user_buckets=801,
        n_categories=200,
        n_tokens=400,
        encoder="mean",
    )
    d = load_from_warehouse(con, history_len=10, n_hashes=2, item_buckets=601, user_buckets=801)
    fp = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
    con.close()
    return d, tower, fp


@pytest.mark.parametrize(
    "encoder,recency,full_catalog_items",
    # 300 items: the default threshold trains over the whole catalog; 0 forces sampled negatives
    [
        ("mean", False, 50_000),
        ("mean", True, 50_000),
        ("mean", True, 0),
        ("attention", True, 50_000),
        ("transformer", False, 50_000),
        ("transformer", False, 0),
    ],
)
def test_loss_falls_and_the_model_beats_popularity(data, encoder, recency, full_catalog_items):
    d, tower, _ = data
    tower = TowerConfig(**{**tower.to_dict(), "encoder": encoder, "recency": recency})
    res = train(
        d.catalog,
        d.train,
        tower,
        TrainConfig(
            epochs=4,
            batch_size=256,
            lr=5e-3,
            patience=4,
            extra_negatives=32,
            full_catalog_items=full_catalog_items,
        ),
        valid=d.valid,
        log=lambda m: None,
    )
    losses = [r["loss"] for r in res.history]
    assert losses[-1] < losses[0]
    model = evaluate_model(res.model, d.catalog, d.valid)["ndcg@10"]
    pop = evaluate_popularity(d.train, d.valid)["ndcg@10"]
    # the planted taste clusters make this learnable: popularity ignores them
    assert model > pop, (encoder, model, pop)


def test_recency_weights_can_put_all_weight_on_the_latest_item():
    from models.retrieval.towers import UserTower

    tower = UserTower(TowerConfig(hidden=4, dim=4, history_len=3, encoder="mean", recency=True, user_buckets=11))
    items = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    mask = torch.tensor([[True, True, True], [False, True, True]])  # left-padded: latest item last
    with torch.no_grad():
        tower.position_logit.copy_(torch.tensor([-50.0, -50.0, 50.0]))
    captured = {}
    tower.norm.register_forward_hook(lambda m, inp, out: captured.setdefault("pooled", inp[0]))
    tower(torch.ones(2, 2, dtype=torch.long), items, mask)
    assert torch.allclose(captured["pooled"], items[:, -1])
    # a plain mean at the start, padding ignored
    with torch.no_grad():
        tower.position_logit.zero_()
    captured.clear()
    tower(torch.ones(2, 2, dtype=torch.long), items, mask)
    assert torch.allclose(captured["pooled"], torch.stack([items[0].mean(0), items[1, 1:].mean(0)]))


def test_one_rule_picks_the_full_catalog_up_to_its_threshold():
    assert full_catalog(TrainConfig(full_catalog_items=300), 300)
    assert not full_catalog(TrainConfig(full_catalog_items=299), 300)
    assert not full_catalog(TrainConfig(full_catalog_items=0), 1)  # 0: always sampled
    assert not full_catalog(TrainConfig(loss="bpr"), 300)


def test_the_towers_width_follows_the_catalog_unless_given():
    def shape(n_items: int) -> WarehouseShape:
        return WarehouseShape(n_items=n_items, n_users=100, n_categories=10, n_tokens=10)

    small, large = tower_config_for(shape(WIDE_UP_TO_ITEMS)), tower_config_for(shape(WIDE_UP_TO_ITEMS + 1))
    assert (small.dim, small.hidden) == (128, 128)
    assert (large.dim, large.hidden) == (64, 64)
    given = tower_config_for(shape(9_066), dim=32, hidden=48)
    assert (given.dim, given.hidden) == (32, 48)
    # a TowerConfig built by hand with the "by catalog" width cannot build towers of width 0
    with pytest.raises(ValueError, match="tower_config_for"):
        TwoTower(TowerConfig())


def test_full_catalog_step_is_the_cross_entropy_over_every_item(data):
    """train_step's loss on the full-catalog path is the softmax over all items, computed here
    from the towers directly (dropout and id dropout off, so both sides see the same vectors)."""
    d, tower, _ = data
    tower = TowerConfig(**{**tower.to_dict(), "id_dropout": 0.0, "dropout": 0.0})
    cfg = TrainConfig(content_alignment=0.0, temperature=0.1, full_catalog_items=len(d.catalog))
    model = TwoTower(tower)
    rows = torch.arange(64)
    log_q = torch.zeros(len(d.catalog))
    loss = train_step(model, d.catalog, d.train, rows, cfg, log_q, torch.Generator().manual_seed(0))
    with torch.no_grad():
        u = model.users(d.catalog, d.train.user_hash[d.train.user[rows]], d.train.history[rows])  # (64, D)
        v = model.item(d.catalog.features(torch.arange(len(d.catalog))))  # (N, D)
        expected = torch.nn.functional.cross_entropy(u @ v.T / 0.1, d.train.target[rows])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_transformer_states_are_causal_and_ignore_padding():
    """Every position is a training target, so position j's state must see items <= j only, and
    never what sits in a padded slot."""
    from models.retrieval.towers import UserTower

    torch.manual_seed(0)
    tower = UserTower(
        TowerConfig(hidden=8, dim=8, history_len=5, encoder="transformer", layers=2, dropout=0.0, user_buckets=11)
    ).eval()
    uh = torch.ones(1, 2, dtype=torch.long)
    items = torch.randn(1, 5, 8)
    mask = torch.tensor([[False, True, True, True, True]])  # left-padded: one empty slot
    with torch.no_grad():
        base = tower(uh, items, mask, all_positions=True)  # (1, 5, D)
        later = items.clone()
        later[0, 3] = torch.randn(8)  # change the 4th slot: slots 1..2 must not move, 3..4 must
        moved = tower(uh, later, mask, all_positions=True)
        padded = items.clone()
        padded[0, 0] = torch.randn(8) * 10  # garbage in the padded slot: nothing moves
        same = tower(uh, padded, mask, all_positions=True)
        last = tower(uh, items, mask)  # (1, D): the inference path reads the last state
    assert torch.allclose(base[0, 1:3], moved[0, 1:3], atol=1e-6)
    assert not torch.allclose(base[0, 3:], moved[0, 3:], atol=1e-4)
    assert torch.allclose(base[0, 1:], same[0, 1:], atol=1e-6)
    assert torch.allclose(base[0, -1], last[0], atol=1e-6)


def test_training_is_seeded(data):
    d, tower, _ = data
    cfg = TrainConfig(epochs=1, max_steps=5, batch_size=128)
    a = train(d.catalog, d.train, tower, cfg, log=lambda m: None).model.state_dict()
    b = train(d.catalog, d.train, tower, cfg, log=lambda m: None).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_round_trip_and_vocabulary_refusal(data, tmp_path):
    d, tower, fp = data
    res = train(d.catalog, d.train, tower, TrainConfig(epochs=1, max_steps=3), log=lambda m: None)
    path = save_checkpoint(
        tmp_path, res.model, config_dict(tower, TrainConfig()), fp, optimizer_states=res.optimizer_states
    )
    update_manifest(tmp_path, latest=path.name)
    assert read_manifest(tmp_path)["latest"] == path.name and not list(tmp_path.glob(".*"))
    model, meta, state = load_checkpoint(path, expected_fingerprint=fp)
    res.model.eval()
    feats = d.catalog.features(torch.arange(20))
    assert torch.allclose(model.item(feats), res.model.item(feats))
    assert meta["vocabulary_fingerprint"] == fp and state["optimizers"]
    with pytest.raises(VocabularyMismatch, match="retrain"):
        load_checkpoint(path, expected_fingerprint="0" * 64)


def _same_tensors(a, b) -> bool:
    """Deep equality of state dicts / lists / numbers, tensors compared exactly."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b))
    return a == b


def test_resuming_restores_the_weights_and_the_optimizer_state(data, tmp_path):
    d, tower, fp = data
    quiet = lambda m: None
    first = train(d.catalog, d.train, tower, TrainConfig(epochs=1, max_steps=3, batch_size=64), log=quiet)
    path = save_checkpoint(
        tmp_path, first.model, config_dict(tower, TrainConfig()), fp, optimizer_states=first.optimizer_states
    )
    _, _, state = load_checkpoint(path, expected_fingerprint=fp)
    # the checkpoint holds exactly the weights and both optimizers' states training ended with
    live = first.model.state_dict()
    assert _same_tensors(state["model"], live)
    assert len(state["optimizers"]) == 2  # AdamW (dense) and SparseAdam (id tables)
    assert _same_tensors(state["optimizers"], first.optimizer_states)

    one = TrainConfig(epochs=1, max_steps=1, batch_size=64)
    resumed = train(d.catalog, d.train, tower, one, log=quiet, init_state=state)
    assert resumed.steps == 1
    # the optimizers continue: every parameter's step counter reads 3 + 1, not 1 (a fresh optimizer)
    counters = [float(s["step"]) for o in resumed.optimizer_states for s in o["state"].values()]
    assert counters and set(counters) == {4.0}
    # one step from the checkpoint equals one step from the in-memory state, and not one from scratch
    from_memory = train(
        d.catalog, d.train, tower, one, log=quiet, init_state={"model": live, "optimizers": first.optimizer_states}
    )
    fresh = train(d.catalog, d.train, tower, one, log=quiet)
    assert _same_tensors(resumed.model.state_dict(), from_memory.model.state_dict())
    assert not _same_tensors(resumed.model.state_dict(), fresh.model.state_dict())


def test_the_refit_set_is_train_and_valid_and_never_a_test_pair(data, planted):
    d, tower, _ = data
    with duckdb.connect(str(planted), read_only=True) as con:
        refit_set = load_refit_set(con, d.catalog, history_len=10, n_hashes=2, user_buckets=801)
        pairs = con.execute("SELECT user_id, item_id, ts, split FROM interaction_splits").df()
        negatives = con.execute("SELECT user_id, item_id, ts FROM clean_interactions WHERE is_negative").df()
    users = refit_set.user_keys[refit_set.user.numpy()]
    rows = set(zip(users, d.catalog.item_ids[refit_set.target.numpy()]))
    by_split = {s: set(zip(g.user_id, g.item_id)) for s, g in pairs.groupby("split")}
    # exactly the train and valid pairs (each once), so the valid transitions are trained
    assert len(rows) == len(refit_set) == len(by_split["train"]) + len(by_split["valid"])
    assert rows == by_split["train"] | by_split["valid"] and by_split["valid"]
    assert not rows & by_split["test"]
    # no test item in any row's history, and every hard negative came before the user's first test pair
    test_items = pairs[pairs.split == "test"].groupby("user_id").item_id.agg(set)
    for r in range(len(refit_set)):
        seen = {d.catalog.item_ids[i] for i in refit_set.history[r].tolist() if i >= 0}
        assert not seen & test_items.get(users[r], set())
    first_test = pairs[pairs.split == "test"].groupby("user_id").ts.min()
    until = negatives.user_id.map(first_test)
    early = negatives[until.isna() | (negatives.ts < until)]
    allowed = set(zip(early.user_id, early.item_id))
    code, slot = np.nonzero(refit_set.hard.numpy() >= 0)
    hard = set(zip(refit_set.user_keys[code], d.catalog.item_ids[refit_set.hard.numpy()[code, slot]]))
    assert hard and hard <= allowed
    # the plain train set is the train pairs alone: what early stopping trains before the refit
    assert len(d.train) == len(by_split["train"])


def test_a_refit_trains_a_new_model_and_leaves_the_early_stopped_one(data, planted, tmp_path):
    d, tower, fp = data
    with duckdb.connect(str(planted), read_only=True) as con:
        refit_set = load_refit_set(con, d.catalog, history_len=10, n_hashes=2, user_buckets=801)
    quiet = lambda m: None
    cfg = TrainConfig(epochs=2, batch_size=256, refit="continue")
    res = train(d.catalog, d.train, tower, cfg, valid=d.valid, log=quiet)
    before = {k: v.clone() for k, v in res.model.state_dict().items()}
    assert res.best_optimizer_states is not None
    assert refit(res, d.catalog, refit_set, tower, TrainConfig(refit="off")) is res
    for mode in ("continue", "retrain"):
        r = refit(res, d.catalog, refit_set, tower, TrainConfig(epochs=2, batch_size=256, refit=mode), log=quiet)
        assert r.model is not res.model and not _same_tensors(r.model.state_dict(), before)
        # one pass (continue) or the best check's passes (retrain) over the train + valid rows
        passes = 1 if mode == "continue" else round(res.best_epoch)
        assert r.epochs == pytest.approx(passes, abs=1e-3) and r.history and "valid_ndcg@10" not in r.history[-1]
    assert _same_tensors(res.model.state_dict(), before)  # valid's model is untouched
    with pytest.raises(ValueError, match="refit must be one of"):
        TrainConfig(refit="valid")


def test_a_moving_average_of_the_weights_is_what_is_judged_and_kept_and_never_feeds_back(data):
    d, tower, _ = data
    cfg = TrainConfig(epochs=2, batch_size=64)
    plain = train(d.catalog, d.train, tower, cfg, valid=d.valid, log=lambda m: None, keep_last=True)
    avg = train(
        d.catalog, d.train, tower, replace(cfg, ema_decay=0.9), valid=d.valid, log=lambda m: None, keep_last=True
    )
    # the same steps (the average is never trained on) ...
    assert [h["loss"] for h in avg.history] == [h["loss"] for h in plain.history]
    # ... but other weights kept and other validation figures: the average's
    assert not _same_tensors(avg.model.state_dict(), plain.model.state_dict())
    assert [h["valid_ndcg@10"] for h in avg.history] != [h["valid_ndcg@10"] for h in plain.history]
    assert evaluate_model(avg.model, d.catalog, d.valid, ks=(10,))["ndcg@10"] == pytest.approx(
        avg.history[-1]["valid_ndcg@10"]
    )
    # the decay at update t is min(ema_decay, (1 + t) / (10 + t)): the first updates move far
    for t, decay in ((1, 2 / 11), (100, 101 / 110), (10_000, 0.999)):
        a = [torch.zeros(3)]
        ema_with_warmup(0.999)(a, [torch.ones(3)], torch.tensor(t))
        assert a[0].tolist() == pytest.approx([1 - decay] * 3)
    # at scale the average is updated every few steps, each update covering them
    assert (ema_every(7_800_000), ema_every(10_000_000), ema_every(71_000_000)) == (1, 1, 8)
    a = [torch.zeros(1)]
    ema_with_warmup(0.999, every=8)(a, [torch.ones(1)], torch.tensor(2_000))
    assert a[0].item() == pytest.approx(1 - 0.999**8)
    with pytest.raises(ValueError, match="ema_decay must be in"):
        TrainConfig(ema_decay=1.0)


def test_a_non_finite_loss_stops_training_with_a_clear_error(data):
    d, tower, _ = data
    with pytest.raises(TrainingDiverged, match="nothing was saved"):
        train(d.catalog, d.train, tower, TrainConfig(temperature=0.0, epochs=1), log=lambda m: None)


def test_histories_are_left_padded_and_never_cross_users(data):
    d, _, _ = data
    h, u = d.train.history.numpy(), d.train.user.numpy()
    first = np.r_[True, u[1:] != u[:-1]]
    assert (h[first] == -1).all()  # a user's first positive has no history
    # where a row follows one of the same user, its last history slot is that row's target
    same = np.flatnonzero(u[1:] == u[:-1]) + 1
    assert (h[same, -1] == d.train.target.numpy()[same - 1]).all()


def test_vectorised_title_tokens_match_the_reference_tokeniser():
    import polars as pl

    from models.retrieval.data import title_token_lists, title_tokens

    titles = [
        "Toy Story (1995)",
        "  L'Été meurtrier (1983) ",
        "x",
        None,
        "",
        "Se7en (1995)  ",
        "a b cd (19)",
        "Kelvin \u212a2 (2001)",
        "2001: A Space Odyssey (1968)",
        "(1999)",
        "Ünïcödé-Title_With__marks (2010)",
    ]
    got = title_token_lists(pl.Series(titles, dtype=pl.String)).to_list()
    assert got == [title_tokens(t) for t in titles]


def test_content_alignment_puts_content_only_vectors_next_to_their_own_item(data):
    """A never-trained item is embedded by content alone; the alignment loss trains that
    content-only vector to pick out its own item's full vector. Measured on the planted data:
    the mean margin of a trained item's content-only vector between the cosine to its own full
    vector and to the nearest other item's, with the loss off and on (same seed and data)."""
    from models.retrieval.evaluation import item_vectors

    d, tower, _ = data
    trained = torch.as_tensor(np.flatnonzero(d.catalog.trained))
    found = {}
    for weight in (0.0, 0.1):
        res = train(
            d.catalog,
            d.train,
            tower,
            TrainConfig(epochs=3, batch_size=256, lr=5e-3, extra_negatives=32, content_alignment=weight),
            log=lambda m: None,
        )
        xb = item_vectors(res.model, d.catalog)  # (N, D), the catalog's own rule
        with torch.no_grad():
            xq = res.model.item(d.catalog.features(trained), with_id=False)  # (T, D)
        scores = xq @ xb.T  # (T, N)
        own = scores[torch.arange(len(trained)), trained]  # (T,)
        scores[torch.arange(len(trained)), trained] = -2.0
        found[weight] = (own - scores.max(1).values).mean().item()  # > 0: own item nearest
    assert found[0.1] > found[0.0] + 0.03, found  # measured: 0.011 -> 0.061


def test_row_sparse_adam_takes_sparse_adams_steps_bit_for_bit():
    """RowSparseAdam only swaps SparseAdam's sparse-tensor updates for row gathers and
    index_add_: from the same table and the same sparse gradients (repeated rows, the padding
    row, a step where some rows are untouched) both give the same weights and moments, bit for bit."""
    from models.retrieval.optim import RowSparseAdam

    torch.manual_seed(0)
    start = torch.nn.Embedding(50, 8, padding_idx=0, sparse=True).weight.detach().clone()
    tables = []
    for cls in (torch.optim.SparseAdam, RowSparseAdam):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(50, 8, padding_idx=0, sparse=True)
        opt = cls([emb.weight], lr=3e-3)
        gen = torch.Generator().manual_seed(1)
        for step in range(6):
            idx = torch.randint(0, 50 if step % 2 else 10, (40,), generator=gen)  # repeats; row 0 = padding
            opt.zero_grad(set_to_none=True)
            (emb(idx) ** 2).sum().backward()
            opt.step()
        tables.append((emb.weight.detach().clone(), opt.state_dict()["state"][0]))
    (w_ref, s_ref), (w_row, s_row) = tables
    assert not torch.equal(w_ref, start)  # the steps moved the table
    assert torch.equal(w_ref, w_row)
    assert s_ref["step"] == s_row["step"] == 6
    assert torch.equal(s_ref["exp_avg"], s_row["exp_avg"]) and torch.equal(s_ref["exp_avg_sq"], s_row["exp_avg_sq"])


def test_histories_are_formed_block_by_block_with_the_same_rows():
    """The gather's (rows, L) temporaries are formed a block of rows at a time: the histories are
    those of the one-block gather, blocks cutting through a user's run included, and the peak
    memory beside the output is a block's, not four outputs' (numpy reports to tracemalloc)."""
    import tracemalloc

    from models.retrieval.data import _histories

    rng = np.random.default_rng(0)
    codes = np.repeat(np.arange(5_000), rng.integers(1, 80, 5_000))  # users' runs of 1..79 rows
    items = rng.integers(0, 10_000, len(codes))
    L = 20
    whole = _histories(codes, items, L, block_rows=len(codes))
    for block in (1, 7, 1_000, len(codes) - 1):
        assert np.array_equal(_histories(codes, items, L, block_rows=block), whole)
    first = np.r_[True, codes[1:] != codes[:-1]]
    assert (whole[first] == -1).all() and (whole[~first, -1] == items[np.flatnonzero(~first) - 1]).all()

    def peak_beside_output(block: int) -> int:
        tracemalloc.start()
        try:
            out = _histories(codes, items, L, block_rows=block)
            return tracemalloc.get_traced_memory()[1] - out.nbytes
        finally:
            tracemalloc.stop()

    output = whole.nbytes  # 200k rows x 20 x 8 bytes = 32 MB
    assert peak_beside_output(len(codes)) > 2 * output  # one block: temporaries of the output's size
    assert peak_beside_output(1_000) < output / 10  # blocks of 1,000 rows: a small share of it


@pytest.mark.parametrize("strategy", ["leave_last_out", "global_time"])
def test_loading_by_integer_ids_builds_the_sets_the_string_ids_build(tmp_path, strategy):
    """load_from_warehouse maps ids to positions in DuckDB (positions_sql); the builders fed the
    string ids, as every other caller feeds them, must give the same tensors."""
    import duckdb
    import pandas as pd

    from models.retrieval.data import build_eval_set, build_train_set, load_catalog, negatives_before_sql
    from models.splits.history import first_targets, history_pairs

    generate(tmp_path / "landing", n_users=120, n_items=90, n_events=6_000, n_clusters=4, seed=3, log=lambda m: None)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    params = default_warehouse_params()
    params["splits"] = {**params["splits"], "strategy": strategy}
    build_warehouse(con, tmp_path / "landing", **params)
    kw = dict(history_len=6, n_hashes=2, user_buckets=97)
    d = load_from_warehouse(con, item_buckets=89, **kw)

    catalog, _, _ = load_catalog(con, n_hashes=2, item_buckets=89)
    pairs = con.execute("SELECT user_id, item_id, ts, split FROM interaction_splits").df()
    pairs = pairs[pairs.split.isin(["train", "valid", "test"])]
    negatives = con.execute(negatives_before_sql("valid", "test")).df()
    assert len(negatives) and (d.train.hard >= 0).any(), "the data must exercise the hard negatives"
    train_set = build_train_set(pairs[pairs.split == "train"], negatives, catalog, **kw)
    for field in ("user_hash", "user", "target", "history", "from_end", "hard", "item_counts"):
        assert torch.equal(getattr(d.train, field), getattr(train_set, field)), field
    assert list(d.train.user_keys) == list(train_set.user_keys)
    for split, got in (("valid", d.valid), ("test", d.test)):
        cuts = first_targets(pairs, split)
        if strategy == "global_time":
            assert cuts.user_id.value_counts().max() == 1 and (pairs.split == split).sum() > len(cuts)
        targets = cuts[["user_id", "target_item"]].rename(columns={"target_item": "item_id"})
        want = build_eval_set(split, history_pairs(pairs, cuts), targets, catalog, **kw)
        assert list(got.user_keys) == list(want.user_keys) and len(want) > 50
        for field in ("user_hash", "history", "target"):
            assert torch.equal(getattr(got, field), getattr(want, field)), (split, field)
        assert np.array_equal(got.seen_rows, want.seen_rows) and np.array_equal(got.seen_items, want.seen_items)
    assert pd.Series(d.catalog.item_ids).equals(pd.Series(catalog.item_ids))
    con.close()


def test_a_sampled_loading_builds_the_users_the_whole_sets_sample_would_draw(tmp_path):
    """load_from_warehouse(sample=(n, seed)) builds only the valid/test users EvalSet.sample(n,
    seed) draws from the whole sets (what early stopping and model_evaluation read), the same
    tensors, and says how many users the whole sets hold."""
    import duckdb

    generate(tmp_path / "landing", n_users=150, n_items=90, n_events=6_000, n_clusters=4, seed=6, log=lambda m: None)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    build_warehouse(con, tmp_path / "landing", **default_warehouse_params())
    kw = dict(history_len=6, n_hashes=2, item_buckets=89, user_buckets=97)
    whole = load_from_warehouse(con, **kw)
    part = load_from_warehouse(con, sample=(40, 7), **kw)
    con.close()
    assert part.users_total == {"valid": len(whole.valid), "test": len(whole.test)} and len(whole.valid) > 100
    for got, full in ((part.valid, whole.valid), (part.test, whole.test)):
        want = full.sample(40, 7)
        assert len(got) == 40 and got.name == want.name
        assert list(got.user_keys) == list(want.user_keys)
        for field in ("user_hash", "history", "target"):
            assert torch.equal(getattr(got, field), getattr(want, field)), field
        assert np.array_equal(got.seen_rows, want.seen_rows) and np.array_equal(got.seen_items, want.seen_items)
    assert torch.equal(part.train.history, whole.train.history)  # the train rows are never sampled
    assert (
        load_from_warehouse(duckdb.connect(str(tmp_path / "w.duckdb")), sample=(10_000, 7), **kw).valid.name == "valid"
    )
