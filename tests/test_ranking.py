"""The ranking stage's parts: the isolation mask, bit-identical candidate scores, action labels
on a hand-written event table, leakage-free cuts, and a tiny training run on planted data."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.ranking_out_of_fold import label_window_pairs
from models.ranking.data import History, RankingSet, hashed, ranking_cuts, users_within_lists
from models.ranking.evaluation import compare_orders, order_metrics
from models.ranking.labels import EVENT_ACTIONS, RATING_ACTIONS, build_action_labels, mask_to_multihot
from models.ranking.model import Ranker, RankerConfig, isolation_mask, score_candidates, weighted_score
from models.ranking.training import RankerTrainConfig, train_ranker
from models.retrieval.data import hash_buckets


def test_isolation_mask_is_causal_over_context_and_isolates_candidates():
    m = isolation_mask(4, 3)  # user + 3 history, 3 candidates
    assert m.shape == (7, 7) and m.dtype == torch.bool
    assert torch.equal(m[:4, :4], torch.tril(torch.ones(4, 4, dtype=torch.bool)))  # context: causal
    assert not m[:4, 4:].any()  # the context never sees a candidate
    assert m[4:, :4].all()  # every candidate sees the whole context
    assert torch.equal(m[4:, 4:], torch.eye(3, dtype=torch.bool))  # ... and itself, no other candidate
    assert isolation_mask(4, 3) is m  # built once per shape


def _untrained(cfg: RankerConfig) -> Ranker:
    """A random ranker whose heads are not zero (a fresh one starts as the retriever's order)."""
    model = Ranker(cfg).eval()
    torch.nn.init.normal_(model.heads.weight, std=0.5)
    if model.feature_head is not None:
        torch.nn.init.normal_(model.feature_head[-1].weight, std=0.5)
    return model


def _inputs(cfg: RankerConfig, cand_ids: list[str], seed: int = 0):
    rng = np.random.default_rng(seed)
    H = cfg.history_len
    hist = np.array([[f"i{j}" for j in rng.integers(0, 50, H)]], dtype=object)
    valid = np.zeros((1, H), dtype=bool)
    valid[0, H // 2 :] = True  # left-padded: half the slots are padding
    acts = torch.as_tensor(mask_to_multihot(rng.integers(0, 2**cfg.n_actions, (1, H)), cfg.n_actions))
    uh = torch.as_tensor(hash_buckets(np.array(["u1"], dtype=object), cfg.n_hashes, cfg.user_buckets))
    cands = np.array([cand_ids], dtype=object)
    scores = torch.as_tensor([[int(c[1:]) / 1000 for c in cand_ids]], dtype=torch.float32)
    # features of a candidate depend on its id only (as popularity or age would)
    feats = torch.as_tensor([[[np.sin(int(c[1:]) * (f + 1)) for f in range(cfg.n_features)] for c in cand_ids]])
    return (
        uh,
        hashed(hist, cfg.n_hashes, cfg.item_buckets, valid),
        acts,
        torch.as_tensor(valid),
        hashed(cands, cfg.n_hashes, cfg.item_buckets, np.ones(cands.shape, dtype=bool)),
        scores,
        feats.float().reshape(1, len(cand_ids), cfg.n_features),
    )


def test_a_candidates_score_is_bit_identical_alone_among_31_others_and_when_they_change():
    torch.manual_seed(0)
    cfg = RankerConfig(n_actions=5, history_len=8, candidates_per_pass=32, item_buckets=257, user_buckets=257)
    model = _untrained(cfg)
    alone = score_candidates(model, *_inputs(cfg, ["i7"]))[0, 0]
    others = [f"i{100 + j}" for j in range(31)]
    among = score_candidates(model, *_inputs(cfg, ["i7", *others]))[0, 0]
    changed = score_candidates(
        model, *_inputs(cfg, [*(f"i{300 + j}" for j in range(20)), "i7", *(f"i{400 + j}" for j in range(11))])
    )[0, 20]
    assert torch.equal(alone, among) and torch.equal(alone, changed)
    # the test can fail: without the mask, candidates would mix (checked on the same weights)
    other = score_candidates(model, *_inputs(cfg, ["i8"]))[0, 0]
    assert not torch.equal(alone, other)
    # 200 candidates go through 7 sequences at once: another matrix shape, so equal up to float
    # rounding (BLAS picks kernels by shape), not bit for bit
    many = ["i7", *(f"i{500 + j}" for j in range(199))]
    torch.testing.assert_close(score_candidates(model, *_inputs(cfg, many))[0, 0], alone, rtol=0, atol=1e-6)


def test_ablations_cut_their_inputs_out_of_the_score():
    """use_retrieval_score False: the score and the retrieval-score / rank features no longer move
    a candidate's logits, the other features still do; user_id False: the user id does not;
    candidate_id False: the candidate's id does not."""
    from models.ranking.features import FEATURES

    base = RankerConfig(n_actions=2, action_signs=(1.0, -1.0), history_len=8, item_buckets=256, user_buckets=256)
    torch.manual_seed(0)
    cands = [f"i{j}" for j in range(5)]
    ret = [FEATURES.index("retrieval_score"), FEATURES.index("log_retrieval_rank")]
    pop = FEATURES.index("log_pop")

    def logits(model, inputs, **change):
        uh, hh, ha, hv, ch, sc, ft = inputs
        ft = ft.clone()
        for col, value in change.get("feat", {}).items():
            ft[..., col] = value
        return model(change.get("user", uh), hh, ha, hv, ch, change.get("score", sc), ft)

    no_ret = _untrained(RankerConfig(**{**base.to_dict(), "use_retrieval_score": False}))
    x = _inputs(no_ret.cfg, cands)
    same = logits(no_ret, x)
    assert torch.equal(same, logits(no_ret, x, score=x[5] * 3 + 1, feat={ret[0]: 9.0, ret[1]: -9.0}))
    assert not torch.equal(same, logits(no_ret, x, feat={pop: 9.0}))
    with_ret = _untrained(base)
    assert not torch.equal(logits(with_ret, x), logits(with_ret, x, feat={ret[0]: 9.0}))
    no_user = _untrained(RankerConfig(**{**base.to_dict(), "user_id": False}))
    other = torch.as_tensor(hash_buckets(np.array(["u2"], dtype=object), base.n_hashes, base.user_buckets))
    assert torch.equal(logits(no_user, x), logits(no_user, x, user=other))
    assert not torch.equal(logits(with_ret, x), logits(with_ret, x, user=other))
    # candidate_id False (the default): a candidate's hashed id does not move its logits, its features do
    renamed = (*x[:4], _inputs(base, [f"i{j + 50}" for j in range(5)])[4], *x[5:])
    assert not base.candidate_id and torch.equal(logits(with_ret, x), logits(with_ret, renamed))
    with_id = _untrained(RankerConfig(**{**base.to_dict(), "candidate_id": True}))
    assert not torch.equal(logits(with_id, x), logits(with_id, renamed))


def test_isolation_is_what_keeps_scores_apart_and_scoring_matches_the_masked_forward():
    torch.manual_seed(0)
    cfg = RankerConfig(n_actions=2, history_len=4, candidates_per_pass=4, item_buckets=97, user_buckets=97)
    model = _untrained(cfg)
    import models.ranking.model as m

    with torch.no_grad():
        a = model(*_inputs(cfg, ["i1", "i2"]))[0, 1]
        a2 = model(*_inputs(cfg, ["i9", "i2"]))[0, 1]
        assert torch.equal(a, a2)  # the mask isolates i2 from its neighbour
        # the scoring path (context encoded once, candidates attend to it + themselves) is the same function
        torch.testing.assert_close(
            torch.sigmoid(model(*_inputs(cfg, ["i1", "i2"]))),
            score_candidates(model, *_inputs(cfg, ["i1", "i2"])),
            rtol=0,
            atol=1e-6,
        )
        original = m.isolation_mask
        m.isolation_mask = lambda c, n: torch.tril(torch.ones(c + n, c + n, dtype=torch.bool))  # plain causal
        try:
            b = model(*_inputs(cfg, ["i1", "i2"]))[0, 1]
            c = model(*_inputs(cfg, ["i9", "i2"]))[0, 1]
        finally:
            m.isolation_mask = original
    assert not torch.equal(b, c)  # without isolation, i2's score depends on its neighbour


def test_weighted_score_squashes_negative_sums_below_every_non_negative_one():
    w = torch.tensor([1.0, 2.0, -10.0])
    p = torch.tensor([[0.9, 0.5, 0.0], [0.1, 0.1, 0.05], [0.1, 0.1, 0.2], [0.0, 0.0, 1.0]])
    s = weighted_score(p, w, offset=1e-3)
    # sums: 1.9, -0.2, -1.7, -10 -> 1.901, then (sum + 10) / 13 * 1e-3, in the same order
    assert s[0].item() == pytest.approx(1.901)
    assert s[1].item() == pytest.approx((-0.2 + 10) / 13 * 1e-3)
    assert s[3].item() == pytest.approx(0.0)
    assert (s[1:] >= 0).all() and (s[1:] < 1e-3).all() and s[1] > s[2] > s[3]


def test_action_labels_from_a_hand_written_event_table(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("""CREATE TABLE clean_interactions AS SELECT * FROM (VALUES
        ('u1', 'a', 'impression',     TIMESTAMP '2024-01-01 10:00', NULL),
        ('u1', 'a', 'click',          TIMESTAMP '2024-01-01 10:00', 12.0),
        ('u1', 'a', 'like',           TIMESTAMP '2024-01-01 10:00', NULL),
        ('u1', 'b', 'impression',     TIMESTAMP '2024-01-01 11:00', NULL),
        ('u1', 'c', 'rating',         TIMESTAMP '2024-01-02 09:00', 4.5),
        ('u1', 'd', 'rating',         TIMESTAMP '2024-01-02 09:00', 3.0),
        ('u2', 'a', 'not_interested', TIMESTAMP '2024-01-03 08:00', NULL),
        ('u2', 'a', 'share',          TIMESTAMP '2024-01-04 08:00', NULL)
    ) t(user_id, item_id, event_type, ts, value)""")
    build_action_labels(con, EVENT_ACTIONS)  # bits: click 1, like 2, share 4, liked_rating 8, not_interested 16
    got = con.execute(
        "SELECT user_id, item_id, ts::VARCHAR, action_mask FROM action_labels ORDER BY user_id, ts, item_id"
    ).fetchall()
    assert got == [
        ("u1", "a", "2024-01-01 10:00:00", 1 | 2),  # impression + click + like at one time: one exposure
        ("u1", "b", "2024-01-01 11:00:00", 0),  # impression with no action: an all-zero row
        ("u1", "c", "2024-01-02 09:00:00", 8),  # rating 4.5 >= 4: liked_rating
        ("u1", "d", "2024-01-02 09:00:00", 0),  # rating 3: no action of this vocabulary
        ("u2", "a", "2024-01-03 08:00:00", 16),  # negative feedback
        ("u2", "a", "2024-01-04 08:00:00", 4),  # a later exposure of the same pair is its own row
    ]
    assert con.execute("SELECT name, weight FROM action_vocabulary ORDER BY idx").fetchall()[4] == (
        "not_interested",
        -10.0,
    )
    build_action_labels(con, RATING_ACTIONS)  # rated 1, rated_4plus 2, rated_5 4, rated_low 8
    masks = dict(
        ((u, i), m)
        for u, i, m in con.execute(
            "SELECT user_id, item_id, action_mask FROM action_labels WHERE action_mask <> 0"
        ).fetchall()
    )
    assert masks == {("u1", "c"): 1 | 2, ("u1", "d"): 1}


def test_cuts_keep_train_rows_inside_the_train_period():
    t = pd.Timestamp("2024-01-01")
    days = lambda d: t + pd.Timedelta(days=d)  # noqa: E731
    pairs = pd.DataFrame(
        {
            "user_id": ["u1"] * 7 + ["u2"] * 2,
            "item_id": ["a", "b", "c", "d", "e", "v", "x", "p", "q"],
            "ts": [days(d) for d in (1, 2, 3, 4, 5, 6, 7, 1, 2)],
            "split": ["train"] * 5 + ["valid", "test"] + ["train"] * 2,
        }
    )
    cuts = ranking_cuts(pairs, label_share=0.4).set_index(["user_id", "split"])
    # u1: 5 train pairs, the last 40% (2) open the window at d, which closes at the valid pair
    assert cuts.loc[("u1", "train"), "cut_ts"] == days(4) and cuts.loc[("u1", "train"), "end_ts"] == days(6)
    assert cuts.loc[("u1", "valid"), "cut_ts"] == days(6) and cuts.loc[("u1", "valid"), "end_ts"] == days(7)
    assert cuts.loc[("u1", "test"), "cut_ts"] == days(7) and pd.isna(cuts.loc[("u1", "test"), "end_ts"])
    assert cuts.loc[("u1", "valid"), "target_item"] == "v"
    # u2 has no held-out pair: its train window is open-ended, still only train pairs
    assert cuts.loc[("u2", "train"), "cut_ts"] == days(2) and ("u2", "valid") not in cuts.index


def test_several_train_cuts_spread_over_the_label_window_one_per_distinct_time():
    t = pd.Timestamp("2024-01-01")
    days = lambda d: t + pd.Timedelta(days=d)  # noqa: E731
    ts = [days(d) for d in range(10)]
    ts[9] = ts[8]  # two pairs at one time: one cut there
    pairs = pd.DataFrame(
        {
            "user_id": ["u1"] * 12,
            "item_id": [f"i{j}" for j in range(10)] + ["v", "x"],
            "ts": ts + [days(10), days(11)],
            "split": ["train"] * 10 + ["valid", "test"],
        }
    )
    one = ranking_cuts(pairs, label_share=0.4, train_cuts=1)
    cuts = ranking_cuts(pairs, label_share=0.4, train_cuts=4)
    train = cuts[cuts.split == "train"]
    # the window is the last 4 train pairs (i6..i9); cut 0 is the single cut's, i9 shares i8's time
    assert list(train["target_item"]) == ["i6", "i7", "i8"] and list(train["cut"]) == [0, 1, 2]
    assert one[one.split == "train"]["target_item"].tolist() == ["i6"]
    assert (train["end_ts"] == days(10)).all() and (train["cut_ts"] < days(10)).all()  # before the valid pair
    assert cuts[cuts.split != "train"]["cut"].eq(0).all() and len(cuts[cuts.split != "train"]) == 2
    with pytest.raises(ValueError):
        ranking_cuts(pairs, label_share=0.4, train_cuts=0)


def test_a_users_history_is_one_rule_for_the_two_tower_the_candidates_and_the_history_tokens(tmp_path):
    # u1 rates a, b on two days, then c, d, e, f in one second (a batch, as MovieLens enters
    # them): leave-last-out orders by (ts, item_id), so f is test, e valid, c and d train. The
    # history at e is a, b, c, d (c, d come first in that order; e itself never) and at f
    # a..e, for the two-tower's valid/test sets, the ranker's candidate histories (what its
    # retrieval reads and excludes) and the ranker's history tokens alike. A rule on time alone
    # (strictly before the target's second) gave the ranker a, b at both: 4 of u1's 5 items.
    from models.retrieval.data import load_from_warehouse
    from models.ranking.data import known_pairs, load_histories
    from models.splits.history import first_targets, history_pairs
    from models.splits.warehouse import build_warehouse, default_warehouse_params
    from tests.conftest import write

    landing = tmp_path / "landing"
    rows = [("u1", i, f"2024-01-0{d} 10:00:00") for i, d in (("a", 1), ("b", 2))]
    rows += [("u1", i, "2024-01-03 10:00:00") for i in ("f", "d", "c", "e")]  # one second, any file order
    rows += [("u2", i, f"2024-01-0{d} 09:00:00") for i, d in (("a", 1), ("c", 2), ("d", 3), ("b", 4))]
    write(
        landing,
        "events/e.csv",
        "user_id,item_id,event_type,timestamp,value\n" + "".join(f"{u},{i},rating,{t},4\n" for u, i, t in rows),
    )
    write(landing, "items/i.csv", "item_id,title,categories\n" + "".join(f"{i},Film {i},Drama\n" for i in "abcdef"))
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    build_warehouse(con, landing, **default_warehouse_params())
    build_action_labels(con, RATING_ACTIONS)
    pairs = con.execute("SELECT user_id, item_id, ts, split FROM interaction_splits").df()
    split_of = dict(zip(pairs.user_id + pairs.item_id, pairs.split))
    assert [split_of[f"u1{i}"] for i in "abcdef"] == ["train"] * 4 + ["valid", "test"]
    expected = {("u1", "valid"): ["a", "b", "c", "d"], ("u1", "test"): ["a", "b", "c", "d", "e"]}
    expected |= {("u2", "valid"): ["a", "c"], ("u2", "test"): ["a", "c", "d"]}  # no ties: b test, d valid

    def by_target(frame):
        return {k: g.sort_values(["ts", "item_id"]).item_id.tolist() for k, g in frame.groupby(["user_id", "split"])}

    # the rule itself
    cuts = pd.concat([first_targets(pairs, s) for s in ("valid", "test")], ignore_index=True)
    assert by_target(history_pairs(pairs, cuts)) == expected
    # the ranker's candidate lists (valid/test cuts of ranking_cuts)
    rcuts = ranking_cuts(pairs, label_share=0.5)
    held = rcuts[rcuts.split != "train"]
    assert by_target(known_pairs(pairs, held)) == expected
    # the ranker's history tokens, over the action labels in SQL
    hist = load_histories(con, held, history_len=8, n_actions=len(RATING_ACTIONS), n_hashes=2, item_buckets=31)
    tokens = {(u, s): [i for i in row if i] for u, s, row in zip(held.user_id, held.split, hist.item_ids)}
    assert tokens == expected
    # the two-tower's valid and test sets: history and the items their ranking excludes
    ds = load_from_warehouse(con, history_len=8, n_hashes=2, item_buckets=31, user_buckets=31)
    for ev in (ds.valid, ds.test):
        for r, u in enumerate(ev.user_keys):
            want = expected[(u, ev.name)]
            assert [ds.catalog.item_ids[i] for i in ev.history[r].tolist() if i >= 0] == want
            assert sorted(ds.catalog.item_ids[i] for i in next(iter(ev.seen_of([r])))) == want
    # a train cut's history stops before its target: u1's window (the last half of its train
    # pairs: c, d) opens at c, the first of the batch, so c, d and the rest are never history
    train = rcuts[rcuts.split == "train"]
    assert known_pairs(pairs, train[train.user_id == "u1"]).item_id.tolist() == ["a", "b"]


def test_the_list_budget_keeps_every_user_when_it_fits_and_whole_users_when_it_does_not():
    # 10 users with 1..10 lists each: 55 lists in all
    cuts = pd.DataFrame({"user_id": [f"u{u:02d}" for u in range(1, 11) for _ in range(u)]})
    everyone = [f"u{u:02d}" for u in range(1, 11)]
    assert users_within_lists(cuts, 0).tolist() == everyone  # 0: no budget
    assert users_within_lists(cuts, 55).tolist() == everyone  # exactly fits
    per_user = cuts.groupby("user_id").size()
    for budget in (54, 20, 10):  # 10: the most one user has, so never empty
        kept = users_within_lists(cuts, budget, seed=3)
        assert 0 < per_user[kept].sum() <= budget and len(kept) < 10
        assert kept.tolist() == sorted(kept) and users_within_lists(cuts, budget, seed=3).tolist() == kept.tolist()
        # the longest prefix of the seeded order: the next user in that order would not fit
        order = per_user.index.to_numpy()[np.random.default_rng(3).permutation(10)]
        assert set(kept) == set(order[: len(kept)])
        assert per_user[kept].sum() + per_user[order[len(kept)]] > budget
    # a bigger budget keeps a superset: the sample grows with the budget, never reshuffles
    assert set(users_within_lists(cuts, 20, seed=3)) <= set(users_within_lists(cuts, 54, seed=3))
    with pytest.raises(ValueError, match="max_lists"):
        users_within_lists(cuts, -1)
    with pytest.raises(ValueError, match="keeps no user"):  # not even one user's lists fit
        users_within_lists(pd.DataFrame({"user_id": ["a"] * 5 + ["b"] * 5}), 4)


def test_the_train_cut_retriever_leaves_out_every_pair_from_the_first_train_cut_on():
    t = pd.Timestamp("2024-01-01")
    days = lambda d: t + pd.Timedelta(days=d)  # noqa: E731
    pairs = pd.DataFrame(
        {
            "user_id": ["u1"] * 7 + ["u2"],
            "item_id": ["a", "b", "c", "d", "e", "v", "x", "p"],
            "ts": [days(d) for d in (1, 2, 3, 3, 5, 6, 7, 1)],
            "split": ["train"] * 5 + ["valid", "test"] + ["train"],
        }
    )
    cuts = ranking_cuts(pairs, label_share=0.4, train_cuts=2)
    out = label_window_pairs(pairs, cuts)
    # u1's window is its last 2 train pairs (d at day 3, e): the first cut is at day 3, so c
    # (the day of d: no cut-0 history holds it) leaves too; valid/test pairs and u2's single
    # pair (no cut) stay, a, b (before the cut) stay
    assert pairs["item_id"][out].tolist() == ["c", "d", "e"]


def test_order_metrics_count_ties_against_the_target_and_missing_targets_as_misses():
    scores = torch.tensor([[3.0, 2.0, 1.0], [1.0, 1.0, 0.0], [5.0, 4.0, 3.0]])
    target = torch.tensor([[False, True, False], [True, False, False], [False, False, False]])
    m = order_metrics(scores, target, torch.ones(3, 3, dtype=torch.bool), ks=(1, 2))
    # ranks 2, 2 (a tie counts against the target), none -> HR@1 0, HR@2 2/3
    assert m["hr@1"] == 0.0 and m["hr@2"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx((2 / np.log2(3)) / 3)
    assert m["target_in_candidates"] == pytest.approx(2 / 3)


def planted(n_users: int, n_cands: int, cfg: RankerConfig, seed: int) -> RankingSet:
    """Two tastes: users of taste t click and like items of their taste, mark the other taste
    not_interested; their history shows it. Retrieval scores are noise, so retrieval order is
    chance and only a ranker that reads history + candidate can put the target first."""
    rng = np.random.default_rng(seed)
    A, H = cfg.n_actions, cfg.history_len
    taste = rng.integers(0, 2, n_users)
    items = lambda t, n: np.array([f"t{t}_{j}" for j in rng.integers(0, 30, n)], dtype=object)  # noqa: E731
    hist = np.stack([items(t, H) for t in taste])
    hist_mask = np.full((n_users, H), 0b011)  # click + like
    flip = rng.random((n_users, H)) < 0.3  # some history is the other taste, marked not_interested
    for u in range(n_users):
        hist[u, flip[u]] = items(1 - taste[u], int(flip[u].sum()))
    hist_mask[flip] = 0b100
    cands = np.stack([np.concatenate([items(t, n_cands // 3), items(1 - t, n_cands - n_cands // 3)]) for t in taste])
    good = np.array([[c.startswith(f"t{t}_") for c in row] for t, row in zip(taste, cands)])
    masks = np.where(
        good, np.where(rng.random(good.shape) < 0.7, 0b011, 0b001), np.where(rng.random(good.shape) < 0.3, 0b100, 0)
    )
    target = np.zeros_like(good)
    target[np.arange(n_users), rng.integers(0, n_cands // 3, n_users)] = True  # one good candidate is held out
    valid = np.ones((n_users, n_cands), dtype=bool)
    hv = np.ones((n_users, H), dtype=bool)
    users = np.array([f"u{seed}_{u}" for u in range(n_users)], dtype=object)
    return RankingSet(
        users,
        torch.as_tensor(hash_buckets(users, cfg.n_hashes, cfg.user_buckets)),
        History(
            hashed(hist, cfg.n_hashes, cfg.item_buckets, hv),
            torch.as_tensor(mask_to_multihot(hist_mask, A)),
            torch.as_tensor(hv),
        ),
        cands,
        hashed(cands, cfg.n_hashes, cfg.item_buckets, valid),
        torch.as_tensor(valid),
        torch.as_tensor(mask_to_multihot(masks, A)),
        torch.as_tensor(target),
        torch.as_tensor(valid),
        torch.as_tensor(rng.random((n_users, n_cands)).astype(np.float32)),
    )


def test_ranker_learns_planted_actions_and_beats_retrieval_order():
    cfg = RankerConfig(
        n_actions=3,
        dim=16,
        heads=2,
        layers=1,
        ffn=32,
        history_len=6,
        candidates_per_pass=8,
        item_buckets=257,
        user_buckets=1031,
        n_features=0,  # the planted signal is in history x candidate id only
        candidate_id=True,
    )
    weights = torch.tensor([1.0, 2.0, -10.0])  # click, like, not_interested
    train, valid, test = planted(400, 24, cfg, 0), planted(150, 24, cfg, 1), planted(150, 24, cfg, 2)
    result = train_ranker(
        train, valid, cfg, RankerTrainConfig(epochs=6, batch_size=32, lr=1e-2, patience=6, seed=0), weights
    )
    probs = score_candidates(
        result.model,
        test.user_hash,
        test.history.item_hash,
        test.history.actions,
        test.history.valid,
        test.cand_hash,
        test.retrieval_score,
    )
    m = compare_orders(
        probs,
        weighted_score(probs, weights),
        test,
        ["click", "like", "not_interested"],
        torch.tensor([False, False, True]),
    )
    assert m["ranked"]["ndcg@10"] > 1.3 * m["retrieval"]["ndcg@10"], m
    # not_interested is a coin flip (30%) among the other taste's items: about 0.66 is the best AUC there is
    assert m["auc"]["not_interested"] > 0.6 and m["auc"]["like"] > 0.7, m["auc"]
    # 8 of 24 candidates are of the user's taste: a good order keeps at most 2 others in the top 10
    assert m["negatives_pushed_out_of_top10"] > 0.5, m
    # epoch 0 is the untrained ranker: the retriever's order, the bar training had to clear
    assert [r["epoch"] for r in result.history] == list(range(len(result.history)))
    assert result.best_epoch > 0 and result.best_valid["ndcg@10"] > result.history[0]["valid_ndcg@10"]
    # the curve's held-out side: the listwise loss training minimises, on valid, fell too
    assert result.history[result.best_epoch]["valid_listwise"] < result.history[0]["valid_listwise"], result.history
    with pytest.raises(ValueError, match="lr_schedule"):
        RankerTrainConfig(lr_schedule="linear")
    # the other early-stopping figure: the same run (patience covers it) keeps the epoch with the
    # lowest valid listwise loss, a trained one (the assert above: one epoch is below epoch 0's),
    # with that epoch's NDCG@10 and weights
    by_loss = train_ranker(
        train,
        valid,
        cfg,
        RankerTrainConfig(epochs=6, batch_size=32, lr=1e-2, patience=6, seed=0, early_stopping="listwise"),
        weights,
    )
    losses = [r["valid_listwise"] for r in by_loss.history]
    assert [r["valid_listwise"] for r in result.history] == losses  # the same training
    assert by_loss.best_epoch == int(np.argmin(losses)) > 0, losses
    assert by_loss.best_valid["ndcg@10"] == by_loss.history[by_loss.best_epoch]["valid_ndcg@10"]
    with pytest.raises(ValueError, match="early_stopping"):
        RankerTrainConfig(early_stopping="auc")


def test_the_service_api_ranks_from_a_saved_checkpoint_like_the_batch_path(tmp_path):
    from models.artifacts import write_manifest
    from models.ranking.ranker import LoadedRanker, load_ranker
    from models.ranking.training import save_ranker

    assert load_ranker(tmp_path) is None  # nothing promoted yet
    cfg = RankerConfig(
        n_actions=2,
        history_len=4,
        candidates_per_pass=8,
        item_buckets=97,
        user_buckets=97,
        action_signs=(1.0, -1.0),
        n_features=0,
    )
    model = _untrained(cfg)
    vocab = [
        {"name": "click", "weight": 1.0, "definition": "click"},
        {"name": "not_interested", "weight": -5.0, "definition": "not_interested"},
    ]
    path = save_ranker(tmp_path / "ranking", model, {"actions": vocab})
    write_manifest(tmp_path / "ranking", {"current": path.name, "latest": path.name, "versions": [path.name]})
    ranker = load_ranker(tmp_path)
    assert isinstance(ranker, LoadedRanker) and ranker.actions == ["click", "not_interested"]
    cands, scores = ["i3", "i1", "i2"], [0.9, 0.5, 0.1]
    res = ranker.rank("u1", ["i7", "i8"], [["click"], ["not_interested"]], cands, scores)
    assert sorted(res.item_ids) == sorted(cands) and list(res.score) == sorted(res.score, reverse=True)
    # the same numbers as the batch path (ids hashed without the cache, history as a History)
    _, batch = ranker.score(
        *_api_inputs(ranker, ["i7", "i8"], [1, 2], cands),
        np.array([cands], dtype=object),
        np.ones((1, 3), dtype=bool),
        np.array([scores], dtype=np.float32),
    )
    assert np.allclose(sorted(batch[0].numpy(), reverse=True), res.score, atol=1e-6)
    with pytest.raises(ValueError, match="unknown action"):
        ranker.rank("u1", ["i7"], [["bogus"]], cands, scores)
    with pytest.raises(ValueError, match="one retriever score per candidate"):
        ranker.rank("u1", [], [], cands, scores[:2])


def _api_inputs(ranker, items, masks, cands):
    c = ranker.cfg
    H = c.history_len
    hi = np.array([[""] * (H - len(items)) + items], dtype=object)
    hv = np.array([[False] * (H - len(items)) + [True] * len(items)])
    hm = np.array([[0] * (H - len(items)) + masks])
    uh = torch.as_tensor(hash_buckets(np.array(["u1"], dtype=object), c.n_hashes, c.user_buckets))
    return uh, History(
        hashed(hi, c.n_hashes, c.item_buckets, hv),
        torch.as_tensor(mask_to_multihot(hm, len(ranker.actions))),
        torch.as_tensor(hv),
        hi,
    )


def _evaluated_ranker(root, ranked: float, retrieval: float) -> str:
    """A saved (untrained) ranker, the latest in its manifest, with an evaluation.json whose
    valid NDCG@10 figures are the given ones (what ranking_evaluation writes)."""
    from models.artifacts import read_manifest, write_json_atomic, write_manifest
    from models.ranking.training import save_ranker

    cfg = RankerConfig(
        n_actions=1, history_len=4, candidates_per_pass=8, item_buckets=97, user_buckets=97, n_features=0
    )
    path = save_ranker(root, _untrained(cfg), {"actions": [{"name": "click", "weight": 1.0, "definition": "click"}]})
    manifest = read_manifest(root) or {"current": None, "latest": None, "versions": []}
    write_manifest(root, {**manifest, "latest": path.name, "versions": [*manifest["versions"], path.name]})
    order = {"ndcg@10": 0.0, "hr@10": 0.0}
    write_json_atomic(
        path / "evaluation.json",
        {
            "version": path.name,
            "valid": {"ranked": {**order, "ndcg@10": ranked}, "retrieval": {**order, "ndcg@10": retrieval}},
            "test": {"ranked": order, "retrieval": order},
        },
    )
    return path.name


def test_promoted_ranker_registers_only_a_ranker_that_beats_retrieval_order(tmp_path):
    from pathlib import Path

    import dagster as dg
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    from assets.ranking.promoted_ranker import promoted_ranker
    from models.ranking.ranker import load_ranker, ranker_manifest
    from models.retrieval.pyfunc import using_tracking_uri
    from orchestration.resources import build_resources

    resources = build_resources(tmp_path)
    root = tmp_path / "artifacts" / "ranking"
    good = _evaluated_ranker(root, ranked=0.30, retrieval=0.20)
    assert dg.materialize([promoted_ranker], resources=resources).success
    client = MlflowClient(tracking_uri=resources["mlflow"].tracking_uri)
    champion = client.get_model_version_by_alias("towerflow-ranker", "champion")
    assert champion.tags["checkpoint"] == good == ranker_manifest(tmp_path / "artifacts")["current"]
    assert float(champion.tags["valid.ranked.ndcg_at_10"]) == 0.3
    assert "ranking_beats_retrieval_on_valid_ndcg: valid NDCG@10 ranked 0.3000 vs retrieval order 0.2000" in (
        champion.description
    )
    assert load_ranker(tmp_path / "artifacts").version == good  # serving follows the promotion
    # the registered version downloads as the checkpoint folder
    with using_tracking_uri(resources["mlflow"].tracking_uri):  # the registry follows the tracking URI
        local = mlflow.artifacts.download_artifacts("models:/towerflow-ranker@champion", dst_path=str(tmp_path / "dl"))
    assert {"config.json", "ranker.pt", "evaluation.json"} <= {p.name for p in Path(local).iterdir()}
    # a ranker that does not beat retrieval order is never promoted: the champion stays
    bad = _evaluated_ranker(root, ranked=0.10, retrieval=0.20)
    result = dg.materialize([promoted_ranker], resources=resources, raise_on_error=False)
    assert result.success  # losing to what serves is a recorded outcome, not a failed run
    manifest = ranker_manifest(tmp_path / "artifacts")
    assert (manifest["latest"], manifest["current"]) == (bad, good)
    assert client.get_model_version_by_alias("towerflow-ranker", "champion").version == champion.version
    assert len(client.search_model_versions("name = 'towerflow-ranker'")) == 1


def test_listwise_loss_scores_each_positive_against_the_users_negatives():
    from models.ranking.training import listwise_loss

    logits = torch.tensor([[[2.0], [0.0], [0.0], [9.0]]])  # one user, 4 candidates, one action
    pos = torch.tensor([[[True], [False], [False], [False]]])
    valid = torch.tensor([[True, True, True, False]])  # the 4th is padding: never a negative
    # -log(e^2 / (e^2 + e^0 + e^0))
    assert listwise_loss(logits, pos, valid).item() == pytest.approx(-np.log(np.exp(2) / (np.exp(2) + 2)), rel=1e-6)
    # the positive scored higher -> lower loss; scored below the negatives -> higher than log(3)
    assert listwise_loss(logits + torch.tensor([[[1.0], [0], [0], [0]]]), pos, valid) < listwise_loss(
        logits, pos, valid
    )
    assert listwise_loss(-logits, pos, valid).item() > np.log(3)
    # two positives: each against the negatives only (not against the other positive), averaged
    pos2 = torch.tensor([[[True], [True], [False], [False]]])
    expect = (np.log1p(np.exp(0 - 2)) + np.log1p(np.exp(0 - 0))) / 2
    assert listwise_loss(logits, pos2, valid).item() == pytest.approx(expect, rel=1e-6)
    # a (user, action) with no negative or no positive adds nothing
    assert listwise_loss(logits, torch.zeros_like(pos), valid).item() == 0.0
    everything = torch.tensor([[[True], [True], [True], [False]]])
    assert listwise_loss(logits, everything, valid).item() == 0.0


def _feature_warehouse(con, late_events: bool):
    """Items a (2 positives before t, 1 in the label window), b (1 long before t), c (none
    before t). late_events adds more events at and after t: they must not change any feature."""
    con.execute("CREATE TABLE clean_items (item_id VARCHAR, categories VARCHAR[], year INTEGER)")
    con.execute(
        "INSERT INTO clean_items VALUES ('a', ['drama'], 1995), ('b', ['comedy'], NULL), ('c', ['drama', 'war'], 2000)"
    )
    con.execute("CREATE TABLE clean_interactions (user_id VARCHAR, item_id VARCHAR, ts TIMESTAMP, is_positive BOOLEAN)")
    rows = [
        ("u1", "a", "2000-01-01 00:00:00", True),  # 370 days before t: in the all-time count only
        ("u2", "a", "2000-12-20 00:00:00", True),  # 15 days before t: all three windows
        ("u3", "a", "2000-12-30 00:00:00", False),  # not positive: never counted
        ("u1", "b", "1999-01-05 00:00:00", True),
        ("u2", "a", "2001-01-04 00:00:00", True),  # at t: the label window, not a feature
    ]
    if late_events:
        rows += [("u9", i, f"2001-01-{d:02d} 00:00:00", True) for i in "abc" for d in (4, 5, 9)]
    con.executemany("INSERT INTO clean_interactions VALUES (?, ?, ?, ?)", rows)
    # the train period's pairs (co-occurrences): u1 took a and b, u2 a and c, u3 a, b and c
    con.execute("CREATE TABLE interaction_splits (user_id VARCHAR, item_id VARCHAR, split VARCHAR)")
    con.execute(
        "INSERT INTO interaction_splits VALUES ('u1', 'a', 'train'), ('u1', 'b', 'train'), ('u2', 'a', 'train'), "
        "('u2', 'c', 'train'), ('u3', 'a', 'train'), ('u3', 'b', 'train'), ('u3', 'c', 'train'), ('u2', 'b', 'test')"
    )


def test_candidate_features_from_duckdb_count_only_events_before_the_cut(tmp_path):
    from models.ranking.features import FEATURES, ItemTimeline, features_for

    t = np.array([int(pd.Timestamp("2001-01-04").timestamp())])  # the cut: the held-out event's time
    out = []
    for late in (False, True):
        con = duckdb.connect(str(tmp_path / f"w{late}.duckdb"))
        _feature_warehouse(con, late)
        tl = ItemTimeline.from_warehouse(con)
        cands = np.array([["a", "b", "c"]], dtype=object)
        hist = np.array([["", "b", "a"]], dtype=object)
        f = features_for(
            tl,
            t,
            np.array(["u1"], dtype=object),
            cands,
            np.ones((1, 3), dtype=bool),
            np.array([[0.9, 0.5, 0.7]]),
            hist,
            np.array([[False, True, True]]),
            np.array([float(t[0] - 7200)]),  # the user's last event two hours before t
        )
        out.append(f)
        con.close()
    f = dict(zip(FEATURES, out[0][0].T))
    assert np.allclose(f["log_pop"], np.log1p([2, 1, 0]))  # a: 2 positives before t (not the one at t)
    assert np.allclose(f["log_pop_365d"], np.log1p([1, 0, 0]))  # a's first one is 370 days old
    assert np.allclose(f["log_pop_30d"], np.log1p([1, 0, 0]))
    assert np.allclose(f["log_age_days"][:2], np.log1p([369, 730])) and f["log_age_days"][2] == 0.0  # c: none yet
    assert np.allclose(f["log_retrieval_rank"], np.log([1, 3, 2]))
    assert np.allclose(f["log_user_gap_hours"], np.log1p(2.0))
    # history a (drama) + b (comedy): a shares with a, b with b, c (drama, war) with a
    assert np.allclose(f["category_affinity"], [0.5, 0.5, 0.5])
    assert np.allclose(f["year_distance"], [0.0, 0.0, 0.5])  # the history's mean year is a's 1995; b has none
    # co-occurrence among the other users (u2, u3; u1's own pairs taken out; u2's test pair never
    # counts): users per item a 3, b 2, c 2. Latest item a: cos(a, b) = 1 (u3) / sqrt(3 * 2),
    # cos(a, c) = 2 (u2, u3) / sqrt(3 * 2); cos(a, a) = 2 / 3 (the other users who took a)
    assert np.allclose(f["cooc_last1"], np.log1p([2 / 3, 1 / np.sqrt(6), 2 / np.sqrt(6)]), atol=1e-6)
    # latest 5 = a and b: + cos(b, a) = 1 / sqrt(6), cos(b, b) = 1 / 2, cos(b, c) = 1 / 2
    expect5 = [2 / 3 + 1 / np.sqrt(6), 1 / np.sqrt(6) + 1 / 2, 2 / np.sqrt(6) + 1 / 2]
    assert np.allclose(f["cooc_last5"], np.log1p(expect5), atol=1e-6) and np.allclose(f["cooc_last32"], f["cooc_last5"])
    # events at and after the cut (the label window and later) change nothing
    assert np.array_equal(out[0], out[1])


def test_co_occurrences_counted_a_block_of_rows_at_a_time_are_each_rows_own():
    """CoOccurrence.scores counts a block of rows' distinct history items against their distinct
    candidates at once; every row must get what it gets alone (a user's train cuts are adjacent
    rows sharing items, so blocks mix repeated and distinct items, padding, unknown users)."""
    from models.ranking.features import COOC_BLOCK, CoOccurrence

    rng = np.random.default_rng(3)
    n_items, n_users = 300, 200
    items = pd.Index([f"i{i}" for i in range(n_items)], dtype=object)
    pairs_user = np.array([f"u{u}" for u in rng.integers(0, n_users, 6000)], dtype=object)
    pairs_item = items.to_numpy()[rng.zipf(1.5, 6000) % n_items]  # a few popular items, a long tail
    cooc = CoOccurrence.build(items, pairs_user, pairs_item)
    G, H, C = COOC_BLOCK * 2 + 7, 40, 30  # two full blocks and a short one
    users = np.array([f"u{u}" for u in np.repeat(rng.integers(0, n_users + 20, G // 4 + 1), 4)[:G]], dtype=object)
    hist = np.where(rng.random((G, H)) < 0.1, -1, rng.zipf(1.5, (G, H)) % n_items)
    valid = (hist >= 0) & (rng.random((G, H)) < 0.9)
    cands = np.where(rng.random((G, C)) < 0.1, -1, rng.zipf(1.5, (G, C)) % n_items)
    together = cooc.scores(users, hist, valid, cands)
    alone = np.concatenate(
        [cooc.scores(users[g : g + 1], hist[g : g + 1], valid[g : g + 1], cands[g : g + 1]) for g in range(G)]
    )
    assert (together > 0).mean() > 0.3  # the data co-occurs: the comparison is not of zeros
    assert np.allclose(together, alone, atol=1e-5)


def test_a_served_ranker_reads_the_features_offline_evaluation_computes_at_the_snapshot_time(tmp_path):
    from models.artifacts import write_manifest
    from models.ranking.features import ItemTimeline, features_for
    from models.ranking.ranker import load_ranker
    from models.ranking.training import save_ranker

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    _feature_warehouse(con, late_events=True)
    tl = ItemTimeline.from_warehouse(con)
    cfg = RankerConfig(n_actions=1, history_len=4, candidates_per_pass=8, item_buckets=97, user_buckets=97)
    model = _untrained(cfg)
    vocab = [{"name": "click", "weight": 1.0, "definition": "click"}]
    with pytest.raises(ValueError, match="item snapshot"):
        save_ranker(tmp_path / "ranking", model, {"actions": vocab})
    path = save_ranker(tmp_path / "ranking", model, {"actions": vocab}, snapshot=tl.snapshot())
    write_manifest(tmp_path / "ranking", {"current": path.name, "latest": path.name, "versions": [path.name]})
    ranker = load_ranker(tmp_path)
    cands, scores = ["c", "a", "b"], [0.9, 0.5, 0.1]
    res = ranker.rank("u1", ["b"], [["click"]], cands, scores, last_event_t=tl.t_end - 3600)
    # offline: the timeline's counts just after its last event, the same history
    t = np.array([tl.t_end + 1])
    f = features_for(
        tl,
        t,
        np.array(["u1"], dtype=object),
        np.array([cands], dtype=object),
        np.ones((1, 3), dtype=bool),
        np.array([scores]),
        np.array([["", "", "", "b"]], dtype=object),
        np.array([[False, False, False, True]]),
        np.array([float(tl.t_end - 3600)]),
    )
    uh, hist = _api_inputs(ranker, ["b"], [1], cands)
    _, offline = ranker.score(
        uh,
        hist,
        np.array([cands], dtype=object),
        np.ones((1, 3), dtype=bool),
        np.array([scores]),
        features=torch.as_tensor(f),
    )
    assert np.allclose(sorted(offline[0].numpy(), reverse=True), res.score, atol=1e-6)
    # ... and they are read: features as of another time (before every event) move the scores
    t0 = np.array([tl.t0])
    early = f.copy()
    early[..., 2:6] = early[..., 10:] = 0.0  # no popularity, no age, no co-occurrence
    _, other = ranker.score(
        uh,
        hist,
        np.array([cands], dtype=object),
        np.ones((1, 3), dtype=bool),
        np.array([scores]),
        features=torch.as_tensor(early),
    )
    assert t0[0] < t[0] and not torch.allclose(other, offline)
    con.close()


def test_retrieval_in_smaller_blocks_on_a_big_catalog_gives_the_same_lists(monkeypatch):
    import models.ranking.data as data

    class Seen:  # two seen items per user, excluded from its list
        def seen_of(self, rows):
            return [np.array([r % 7, (3 * r) % 50]) for r in rows]

    torch.manual_seed(0)
    users, items = torch.randn(300, 8), torch.randn(5000, 8)
    whole = data.retrieve(users, items, Seen(), 20)  # one block of 300 users
    monkeypatch.setattr(data, "SCORE_BLOCK", 5000 * 7)  # 7 users a block
    blocks = data.retrieve(users, items, Seen(), 20)
    assert np.array_equal(whole[0], blocks[0]) and np.array_equal(whole[1], blocks[1])
    assert not np.isin(whole[0][5], [5 % 7, 15]).any()  # user 5's seen items are not retrieved
