"""How the ranker picks its epoch and its action weights, measured: the product's ranker over the
candidates of bench_quality_movielens's loo two-tower (the same seed's cached model), trained for
its whole epoch budget once per seed, every epoch's model scored on valid and test (train_ranker's
`on_epoch`). The selection rules then read the same per-user figures, so they differ only in how
they choose, never in what was trained:

- ``ndcg, grid`` (the product until now): the epoch with the best valid NDCG@10 under the action
  weights chosen on valid from the 80-point grid (choose_weights), patience 3 epochs;
- ``loss, grid``: the epoch with the lowest valid listwise loss (patience 3), weights from the grid;
- ``loss, <w>`` / ``ndcg, <w>``: fixed action weights (``vocabulary``, ``rated``: rated alone);
- ``avg3 ...``: the mean of the last 3 epochs' weights (a uniform average of parameters) in place
  of one epoch's.

Two figures per rule and seed: test NDCG@10 of its choice, and a held-out valid figure, the mean
over 200 random halvings of the valid users of NDCG@10 on one half when the rule chooses on the
other (choosing and measuring on the same users favours whatever searches hardest).

    python -m benchmarks.ranking_selection --workdir DIR --seeds 0,1,2 --threads 1

DIR: a bench_quality_movielens workdir whose cache holds the loo two-tower rows' models under the
checkout's retriever code. Work-counted: 8 epochs per seed, one torch thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.bench_quality_movielens import Cache, product_two_tower  # noqa: E402
from benchmarks.bench_ranking import load_retriever, ranking_candidates, ranking_inputs  # noqa: E402
from benchmarks.movielens import models_version  # noqa: E402
from models.ranking.data import load_ranking_set  # noqa: E402
from models.ranking.model import ranker_config_for, score_candidates, weighted_score  # noqa: E402
from models.ranking.settings import RankingSettings  # noqa: E402
from models.ranking.training import WEIGHT_MULTIPLES, RankerTrainConfig, train_ranker, valid_listwise  # noqa: E402
from models.retrieval.data import WarehouseShape  # noqa: E402

PATIENCE = RankerTrainConfig().patience


def per_user_ndcg(scores: torch.Tensor, rs) -> np.ndarray:
    """(G, C) scores over rs's retrieved lists -> (G,) NDCG@10 of each user's target (ties count
    against it, a target outside the list scores 0: models/ranking/evaluation.py order_metrics)."""
    valid = rs.cand_valid & rs.retrieved
    s = torch.where(valid, scores.float(), torch.tensor(-torch.inf))
    has = (rs.is_target & valid).any(1)
    t = torch.where(rs.is_target & valid, s, torch.tensor(torch.inf)).min(1).values
    rank = ((s >= t[:, None]) & valid & ~rs.is_target).sum(1) + 1
    out = torch.where(has & (rank <= 10), 1.0 / torch.log2(rank.double() + 1), torch.zeros(len(s), dtype=torch.double))
    return out.numpy()


def probs_of(model, rs) -> torch.Tensor:
    return score_candidates(
        model,
        rs.user_hash,
        rs.history.item_hash,
        rs.history.actions,
        rs.history.valid,
        rs.cand_hash,
        rs.retrieval_score,
        rs.features,
    )


def grid(base: torch.Tensor) -> list[torch.Tensor]:
    """choose_weights' grid: base first, then every multiple pattern but all-zero and all-one."""
    return [base] + [
        base * torch.tensor(m, dtype=base.dtype)
        for m in itertools.product(WEIGHT_MULTIPLES, repeat=len(base))
        if any(m) and any(x != 1.0 for x in m)
    ]


def choose(values: np.ndarray, lower: bool) -> int:
    """The early-stopping epoch over per-epoch `values` with patience: the first best (strictly
    better to move), stopping after PATIENCE epochs without one."""
    best, at, bad = values[0], 0, 0
    for e in range(1, len(values)):
        better = values[e] < best if lower else values[e] > best
        if better:
            best, at, bad = values[e], e, 0
        else:
            bad += 1
            if bad >= PATIENCE:
                break
    return at


def seed_figures(sets, cfg, weights, seed: int, log) -> dict:
    """Train once (every epoch of the budget), score each epoch and each 3-epoch average on
    valid and test: per-user NDCG@10 under every grid weight, and the valid listwise loss."""
    train_set, valid_set, test_set = sets
    W = grid(weights)
    states, rows = [], []

    def record(model, probs_v, tag):
        probs_t = probs_of(model, test_set)
        rows.append(
            {
                "tag": tag,
                "loss": valid_listwise(probs_v, valid_set),
                "valid": np.stack([per_user_ndcg(weighted_score(probs_v, w), valid_set) for w in W]),
                "test": np.stack([per_user_ndcg(weighted_score(probs_t, w), test_set) for w in W]),
            }
        )

    def on_epoch(epoch, model, probs_v):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        record(model, probs_v, epoch)
        log(f"seed {seed} epoch {epoch}: valid loss {rows[-1]['loss']:.4f}")

    tcfg = RankerTrainConfig(seed=seed, patience=10**6)  # the whole budget; rules stop afterwards
    res = train_ranker(train_set, valid_set, cfg, tcfg, weights, on_epoch=on_epoch)
    model = res.model
    avg = []
    for e in range(3, len(states)):  # the mean of epochs e-2..e
        model.load_state_dict({k: sum(states[j][k].float() for j in (e - 2, e - 1, e)) / 3 for k in states[e]})
        record(model, probs_of(model, valid_set), f"avg{e}")
        avg.append(rows.pop())
    return {"epochs": rows, "avg": avg, "W": W, "best_epoch": res.best_epoch}


def rules(fig: dict, names: list[str]) -> dict:
    """rule -> function(users mask) -> (row index into its list, weight index), chosen on the
    valid users of the mask only."""
    W = fig["W"]
    fixed = {"vocabulary": 0}
    rated = [i for i, w in enumerate(W) if w[0] > 0 and not w[1:].any()]
    if names[0] == "rated" and rated:
        fixed["rated"] = rated[0]
    out = {}

    def ndcg_grid(rows):
        def pick(mask):
            # epoch 0 keeps the vocabulary's weights (train_ranker does not search before training)
            best_w = [0] + [int(r["valid"][:, mask].mean(1).argmax()) for r in rows[1:]]
            vals = np.array([rows[e]["valid"][best_w[e], mask].mean() for e in range(len(rows))])
            e = choose(vals, lower=False)
            return e, best_w[e]

        return pick

    def ndcg_fixed(rows, w):
        def pick(mask):
            return choose(np.array([r["valid"][w, mask].mean() for r in rows]), lower=False), w

        return pick

    def loss_grid(rows):
        def pick(mask):
            e = choose(np.array([r["loss"] for r in rows]), lower=True)
            w = 0 if e == 0 else int(rows[e]["valid"][:, mask].mean(1).argmax())
            return e, w

        return pick

    def loss_fixed(rows, w):
        def pick(mask):
            return choose(np.array([r["loss"] for r in rows]), lower=True), w

        return pick

    ep, av = fig["epochs"], [fig["epochs"][0], *fig["avg"]]  # averages: epoch 0 stays a choice
    out["ndcg, grid (until now)"] = (ep, ndcg_grid(ep))
    out["loss, grid"] = (ep, loss_grid(ep))
    for n, w in fixed.items():
        out[f"ndcg, {n}"] = (ep, ndcg_fixed(ep, w))
        out[f"loss, {n}"] = (ep, loss_fixed(ep, w))
    out["avg3 ndcg, grid"] = (av, ndcg_grid(av))
    out["avg3 loss, grid"] = (av, loss_grid(av))
    for n, w in fixed.items():
        out[f"avg3 loss, {n}"] = (av, loss_fixed(av, w))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--halvings", type=int, default=200)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = lambda m: print(f"#   {m}", flush=True)  # noqa: E731
    seeds = [int(s) for s in args.seeds.split(",")]
    src = duckdb.connect(str(args.workdir / "warehouse.duckdb"), read_only=True)
    shape = WarehouseShape.read(src)
    fp = src.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
    src.close()
    cache, version = Cache(args.workdir / "quality_cache.json", fp), models_version()
    if version is None:
        raise SystemExit("the retriever's code has uncommitted changes: the cached two-towers cannot be matched")
    config = RankingSettings()
    table = {}
    for seed in seeds:
        tower, tcfg = product_two_tower(shape, seed, None)
        params = {"tower": tower.to_dict(), "train": dataclasses.asdict(tcfg), "models": version}
        path = cache.model_path("loo", "two-tower", params, seed)
        if not path.exists():
            raise SystemExit(f"no cached loo two-tower for seed {seed} ({path}): run bench_quality_movielens first")
        retriever = load_retriever(path)
        with tempfile.TemporaryDirectory(prefix="selection-", dir=args.workdir) as tmp:
            db = Path(tmp) / "warehouse.duckdb"
            shutil.copy(args.workdir / "warehouse.duckdb", db)
            con = duckdb.connect(str(db))
            ranking_candidates(con, retriever, config.n_candidates, config)
            vocab, weights, n_items, n_users, timeline = ranking_inputs(con)
            cfg = ranker_config_for(weights.tolist(), n_items, n_users)
            sets = [load_ranking_set(con, s, cfg, timeline=timeline) for s in ("train", "valid", "test")]
            con.close()
        retrieval = per_user_ndcg(sets[2].retrieval_score, sets[2]).mean()
        retrieval_v = per_user_ndcg(sets[1].retrieval_score, sets[1])
        fig = seed_figures(sets, cfg, weights, seed, log)
        names = [a["name"] for a in vocab]
        G = len(sets[1])
        rng = np.random.default_rng(seed)
        halves = [rng.permutation(G) < G // 2 for _ in range(args.halvings)]
        everyone = np.ones(G, dtype=bool)
        for rule, (rows, pick) in rules(fig, names).items():
            e, w = pick(everyone)
            held = np.mean([rows[pick(h)[0]]["valid"][pick(h)[1], ~h].mean() / retrieval_v[~h].mean() for h in halves])
            r = {
                "test": float(rows[e]["test"][w].mean()),
                "test_x": float(rows[e]["test"][w].mean() / retrieval),
                "valid_x": float(rows[e]["valid"][w].mean() / retrieval_v.mean()),
                "heldout_valid_x": float(held),
                "epoch": rows[e]["tag"],
                "weights": [round(x, 1) for x in fig["W"][w].tolist()],
            }
            table.setdefault(rule, []).append(r)
            print(
                f"# seed {seed} {rule}: test {r['test']:.4f} ({r['test_x']:.3f}x retrieval {retrieval:.4f}), "
                f"valid {r['valid_x']:.3f}x, held-out valid {r['heldout_valid_x']:.3f}x, epoch {r['epoch']}, "
                f"weights {r['weights']}",
                flush=True,
            )
        curve = ", ".join(
            f"{x['tag']}: loss {x['loss']:.3f} valid {x['valid'][0].mean():.4f} test {x['test'][0].mean():.4f}"
            for x in fig["epochs"]
        )
        print(f"# seed {seed} curve (vocabulary weights): {curve}", flush=True)
    print(f"\n{'rule':<26} {'test NDCG@10 per seed':<26} {'test x':>7} {'valid x':>8} {'held-out valid x':>17}  epochs")
    for rule, rs in table.items():
        print(
            f"{rule:<26} {' / '.join(format(r['test'], '.4f') for r in rs):<26} "
            f"{np.mean([r['test_x'] for r in rs]):>7.3f} {np.mean([r['valid_x'] for r in rs]):>8.3f} "
            f"{np.mean([r['heldout_valid_x'] for r in rs]):>17.3f}  {[r['epoch'] for r in rs]}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
