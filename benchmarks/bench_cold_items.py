"""Cold items by content: new catalog rows that copy existing items' content under new ids,
embedded by the incremental job. Is each copy's source among its 10 nearest neighbours?

    python benchmarks/bench_cold_items.py [--variants current] [--copies 20 200] [--workdir DIR]
    python benchmarks/bench_cold_items.py --variants aux=0 aux=default

For each variant, in its own temp TOWERFLOW_HOME (the same generated landing data for all):

1. `towerflow generate` with its defaults (generated once, copied into each home);
2. `dagster asset materialize -m orchestration.definitions --select '*'` (the whole graph; a
   variant `aux=W` sets `two_tower_model`'s `content_alignment` to W, `aux=default` and
   `current` leave the config alone);
3. for each figure in --copies (ascending): new rows in `landing/items/` copying the title and
   categories of seeded random *trained* items (in the train-split item vocabulary) under new
   ids `copy-<source>`, then `dagster job execute -j incremental_item_embedding_job` (what
   `new_items_sensor` requests); every copy is then looked up with `Recommender.similar` (the
   code `towerflow similar` runs), top 10.

Printed per variant and copy count: source@10 (share of copies whose source is in their top
10), the source's mean rank when found, the mean cosine copy-source; genre precision@10 (share
of an item's 10 neighbours sharing a category with it) of the copies, of never-seen catalog items
(in the catalog, not in the train item vocabulary) and of a seeded sample of seen items; and
the champion's valid/test NDCG@10 from its evaluation.json. The issue's baseline on main was
6/20; the goal is >= 90%.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))


def _log(message: str) -> None:
    print(f"[bench_cold_items] {message}", file=sys.stderr, flush=True)


def _env(home: Path, threads: int) -> dict:
    env = dict(
        os.environ,
        TOWERFLOW_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        MLFLOW_DISABLE_TELEMETRY="true",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


def _run(cmd: list[str], env: dict, what: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}")
    return time.perf_counter() - t0


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def prepare_home(home: Path, landing: Path) -> None:
    shutil.copytree(landing, home / "landing")
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")


def materialize(home: Path, variant: str, threads: int) -> float:
    cmd = [_bin("dagster"), "asset", "materialize", "-m", "orchestration.definitions", "--select", "*"]
    if variant.startswith("aux=") and variant != "aux=default":
        weight = float(variant.split("=", 1)[1])
        cmd += ["--config-json", json.dumps({"ops": {"two_tower_model": {"config": {"content_alignment": weight}}}})]
    return _run(cmd, _env(home, threads), f"materializing the graph ({variant})")


def pick_sources(home: Path, n: int, seed: int) -> list[tuple[str, str, str]]:
    """(source id, title, categories joined by '|') of n seeded random trained catalog items."""
    import duckdb
    import numpy as np

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    rows = con.execute("""SELECT i.item_id, i.title, array_to_string(i.categories, '|') FROM clean_items i
                          WHERE i.item_id IN (SELECT key FROM vocabularies WHERE vocabulary = 'item_id')
                          ORDER BY i.item_id""").fetchall()
    con.close()
    take = np.random.default_rng(seed).choice(len(rows), size=min(n, len(rows)), replace=False)
    return [rows[i] for i in take]


def add_copies(home: Path, sources: list, name: str, threads: int) -> float:
    import csv

    with open(home / "landing" / "items" / name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "categories"])
        w.writerows([(f"copy-{src}", title, cats) for src, title, cats in sources])
    cmd = [_bin("dagster"), "job", "execute", "-m", "orchestration.definitions", "-j", "incremental_item_embedding_job"]
    return _run(cmd, _env(home, threads), "incremental_item_embedding_job")


def measure(home: Path, sources: list, n_seen: int, seed: int) -> dict:
    import duckdb
    import numpy as np

    from models.serving.recommender import Recommender

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    cats = {k: set(v or []) for k, v in con.execute("SELECT item_id, categories FROM clean_items").fetchall()}
    trained = {r[0] for r in con.execute("SELECT key FROM vocabularies WHERE vocabulary = 'item_id'").fetchall()}
    rec = Recommender(con, home / "artifacts", threads=1, users=[])  # what `towerflow similar` loads
    con.close()
    copies = {f"copy-{src}" for src, _, _ in sources}

    def neighbours(item: str) -> list[str]:
        return [r[2] for r in rec.similar(item, 10)]

    def genre_precision(items) -> float:
        shares = [np.mean([bool(cats[item] & cats.get(n, set())) for n in neighbours(item)]) for item in items]
        return float(np.mean(shares)) if shares else float("nan")

    hits, ranks, cos = 0, [], []
    for src, _, _ in sources:
        copy = f"copy-{src}"
        top = neighbours(copy)
        if src in top:
            hits += 1
            ranks.append(top.index(src) + 1)
        a, b = rec.index.rows_of([copy, src])
        cos.append(float(rec.index.vector(a) @ rec.index.vector(b)))
    rng = np.random.default_rng(seed)
    seen = sorted(trained & set(cats))
    never = sorted(set(cats) - trained - copies)
    version = rec.version
    evaluation = json.loads((home / "artifacts" / "models" / version / "evaluation.json").read_text())
    return {
        "copies": len(sources),
        "hits": hits,
        "source@10": hits / len(sources),
        "mean_rank": float(np.mean(ranks)) if ranks else float("nan"),
        "cos": float(np.mean(cos)),
        "gp_copies": genre_precision(sorted(copies)),
        "gp_never": genre_precision(rng.choice(never, min(n_seen, len(never)), replace=False))
        if never
        else float("nan"),
        "n_never": len(never),
        "gp_seen": genre_precision(rng.choice(seen, min(n_seen, len(seen)), replace=False)),
        "valid_ndcg": evaluation["model"]["valid"]["ndcg@10"],
        "test_ndcg": evaluation["model"]["test"]["ndcg@10"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--variants",
        nargs="+",
        default=["aux=0", "aux=default"],
        help="current (the code as it is, default config) or aux=W / aux=default",
    )
    p.add_argument("--copies", nargs="+", type=int, default=[20, 200], help="cumulative copy counts, ascending")
    p.add_argument("--seen-sample", type=int, default=300, help="seen / never-seen items sampled for genre precision")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=None, help="kept when given (else a temp folder, removed)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_cold_items_"))
    work.mkdir(parents=True, exist_ok=True)
    landing = work / "landing"
    if not landing.exists():
        gen = work / "gen"
        _run([_bin("towerflow"), "generate"], _env(gen, args.threads), "towerflow generate")
        shutil.move(str(gen / "landing"), landing)
    results = []
    for variant in args.variants:
        home = work / variant.replace("=", "_")
        shutil.rmtree(home, ignore_errors=True)
        prepare_home(home, landing)
        seconds = materialize(home, variant, args.threads)
        _log(f"{variant}: graph materialized in {seconds:.0f} s")
        sources = pick_sources(home, max(args.copies), args.seed)
        done = 0
        for n in sorted(args.copies):
            s = add_copies(home, sources[done:n], f"copies-{n}.csv", args.threads)
            done = n
            r = measure(home, sources[:n], args.seen_sample, args.seed)
            _log(f"{variant}, {n} copies: incremental job {s:.0f} s, source@10 {r['hits']}/{n}")
            results.append((variant, r))
    print(
        "\nCold copies (new ids, copied title + categories) embedded by incremental_item_embedding_job; "
        "top-10 from Recommender.similar (towerflow similar)\n"
    )
    header = (
        "variant",
        "copies",
        "source@10",
        "mean rank",
        "cos(copy, src)",
        "GP@10 copies",
        "GP@10 never-seen",
        "GP@10 seen",
        "valid NDCG@10",
        "test NDCG@10",
    )
    rows = [
        (
            v,
            str(r["copies"]),
            f"{r['hits']}/{r['copies']} ({r['source@10']:.0%})",
            f"{r['mean_rank']:.2f}",
            f"{r['cos']:.3f}",
            f"{r['gp_copies']:.3f}",
            f"{r['gp_never']:.3f} (n={r['n_never']})",
            f"{r['gp_seen']:.3f}",
            f"{r['valid_ndcg']:.4f}",
            f"{r['test_ndcg']:.4f}",
        )
        for v, r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    base = [r for v, r in results if v == args.variants[0]]
    for v in args.variants[1:]:
        for b, r in zip(base, [r for vv, r in results if vv == v]):
            print(
                f"{v} vs {args.variants[0]} at {r['copies']} copies: source@10 {r['source@10']:.0%} vs "
                f"{b['source@10']:.0%}; test NDCG@10 ratio {r['test_ndcg'] / b['test_ndcg']:.3f}"
            )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
