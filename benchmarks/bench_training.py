"""One training epoch: towerflow's trainer (models/retrieval/training.py) vs a tutorial-style input
pipeline, on the same generated interactions, at a small and a large item catalog.

    python -m benchmarks.bench_training [--quick] [--workdir DIR] [--max-examples N] [--repeats R]

Both sides train the same `TwoTower` (mean encoder, same `TowerConfig`) with the same
optimizers (`make_optimizers`: AdamW + SparseAdam for the id tables), the same gradient
clipping and the same `info_nce` (in-batch negatives, logQ-corrected, temperature 0.05), at
the same batch size and embedding size. What differs is the input pipeline:

- towerflow: `train(...)` with `TrainConfig(epochs=1, extra_negatives=0, hard_negatives=False)`;
  a batch is a slice of a shuffled index tensor gathered from precomputed (n, L) tensors.
- reference (what tutorial code does): a `torch.utils.data.Dataset` whose `__getitem__(i)`
  builds one example in Python (user-hash row and the user's history slice from Python
  lists, the target, and K uniform negatives drawn in a Python loop that rejects the user's
  own positives), a `DataLoader(shuffle=True, num_workers=0)` with the default collate, and
  the K negatives passed to `info_nce` as per-row negatives (`v_hard` / `hard_ids`). So the
  reference's loss also has K extra columns and its item tower encodes B * K more items per
  step; the table shows how much of its time the input pipeline alone takes.

Each side runs in its own process, so peak RSS (ru_maxrss) is its own (data preparation runs
in a third process: Linux carries ru_maxrss across fork and exec, so the parent never loads
data). Both sides start by loading the same prepared tensors (cached under --workdir with the
landing files and the warehouse); "loaded RSS" is the process size right after that load.
Both run with one torch thread unless --threads says otherwise. Seconds are wall time of the
epoch loop (model construction excluded; towerflow's figure is `TrainResult.seconds`, which
includes its end-of-epoch copy of the best weights). The reference is capped at
--max-examples and its examples/s is extrapolated from that partial epoch (it has no
per-epoch fixed cost worth mentioning, so the rate is representative).

`--baseline REV` adds a third side: the trainer of git revision REV (exported under
--workdir; this script's child runs with REV's `models` first on sys.path), so a change to the
trainer is measured against the loop it replaces in the same run. `--trainer-defaults` trains
the trainer sides with the product's TrainConfig (512 shared uniform negatives, the users' hard
negatives, content alignment) instead of in-batch negatives alone, and `--sides` picks the sides
(e.g. towerflow,baseline without the tutorial reference); `--train-examples N` caps the trainer
sides at N examples (whole steps), as --max-examples caps the reference. Each side also reports
CPU seconds (its process's user + system time): on a shared machine the wall clock counts the
time other processes held the cores, the CPU time does not.

Prints one table. Goal (reported, not asserted): towerflow >= 10x the reference's examples/s.
Absolute figures depend on what else the machine runs; the two sides of a ratio run
back to back (order alternating between repeats), so ratios are the figures to compare.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `models` / `assets` importable for the children
    sys.path.insert(0, str(ROOT))

SIDES = ("towerflow", "reference", "baseline")
TARGET_RATIO = 10.0
HISTORY_LEN = 20  # TowerConfig default; both sides read the last 20 positives
N_HASHES = 2


def scenarios(quick: bool) -> list[dict]:
    """Generator arguments per catalog size; the same events count and users for each."""
    if quick:
        return [{"n_users": 2_000, "n_items": n, "n_events": 50_000, "seed": 0} for n in (1_000, 100_000)]
    return [{"n_users": 50_000, "n_items": n, "n_events": 1_000_000, "seed": 0} for n in (10_000, 1_000_000)]


def _log(message: str) -> None:
    print(f"[bench_training] {message}", file=sys.stderr, flush=True)


def _rss_mib() -> float:
    """Current resident set size (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _hwm_mib() -> float:
    """Peak RSS of this process's own address space (VmHWM), MiB: a cross-check of ru_maxrss."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


# --- data: landing files -> warehouse -> tensors, cached per scenario ------------------------


def ensure_prepared(workdir: Path, params: dict) -> Path:
    """prepare() in a child process. Linux keeps ru_maxrss across fork and exec, so a child
    started by a parent that once held the warehouse tables would report the parent's peak:
    the parent stays small by never loading data itself."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_training",
        "--prepare",
        json.dumps(params),
        "--workdir",
        str(workdir),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(
            f"bench_training: preparing {params} in {workdir} failed (exit {proc.returncode}); its stderr is above"
        )
    sys.stderr.write(proc.stderr)
    return Path(proc.stdout.strip().splitlines()[-1])


def code_fingerprint() -> str:
    """Hash of the code that shapes the cached data (generator, SQL, tensor building): the
    cache pickles a TrainSet, so a change to any of these rebuilds it."""
    files = [
        ROOT / "models" / f
        for f in (
            "sources/synthetic.py",
            "retrieval/data.py",
            "splits/vocab.py",
            "ingest/landing.py",
            "clean/cleaning.py",
            "splits/build.py",
            "splits/rules.py",
            "splits/warehouse.py",
            "clean/rules.py",
        )
    ]
    files += sorted((ROOT / "sql").glob("*.sql"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def prepare(workdir: Path, params: dict) -> Path:
    """workdir/items-<n>/tensors.pt: catalog, train set and vocabulary sizes, rebuilt unless
    params.json (written last) shows a complete folder made with the same arguments."""
    import duckdb
    import torch

    from models.retrieval.data import load_from_warehouse
    from models.sources.synthetic import generate

    folder = workdir / f"items-{params['n_items']}"
    full = {
        **params,
        "history_len": HISTORY_LEN,
        "n_hashes": N_HASHES,
        "item_buckets": 2 * params["n_items"] + 1,
        "user_buckets": 2 * params["n_users"] + 1,
        "code": code_fingerprint(),
    }
    marker, tensors = folder / "params.json", folder / "tensors.pt"
    if marker.exists() and json.loads(marker.read_text()) == full and tensors.exists():
        return tensors
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    generate(folder / "landing", **params, log=lambda m: None)
    con = duckdb.connect(str(folder / "warehouse.duckdb"))
    try:
        from models.splits.warehouse import default_warehouse_params
        from models.splits.warehouse import build_warehouse

        build_warehouse(con, folder / "landing", **default_warehouse_params())
        data = load_from_warehouse(
            con,
            history_len=HISTORY_LEN,
            n_hashes=N_HASHES,
            item_buckets=full["item_buckets"],
            user_buckets=full["user_buckets"],
        )
    finally:
        con.close()
    torch.save(
        {
            "catalog": data.catalog,
            "train": data.train,
            "n_categories": data.category_vocab.size,
            "n_tokens": data.token_vocab.size,
            "params": full,
        },
        tensors,
    )
    marker.write_text(json.dumps(full))
    _log(
        f"prepared {folder.name}: {len(data.catalog):,} items, {len(data.train):,} train examples "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return tensors


# --- the two sides, each run in a child process ---------------------------------------------


def load(tensors: Path, dim: int):
    import torch

    from models.retrieval.towers import TowerConfig

    blob = torch.load(tensors, weights_only=False)
    p = blob["params"]
    tower = TowerConfig(
        encoder="mean",
        dim=dim,
        hidden=64,  # the width the 1M-item catalogs this measures get (models.retrieval.towers.width_for)
        history_len=p["history_len"],
        n_hashes=p["n_hashes"],
        item_buckets=p["item_buckets"],
        user_buckets=p["user_buckets"],
        n_categories=blob["n_categories"],
        n_tokens=blob["n_tokens"],
    )
    return blob["catalog"], blob["train"], tower


def train_config(batch_size: int, seed: int, defaults: bool = False, max_steps: int | None = None):
    """The trainer sides' config: in-batch negatives alone (what the reference's loss has), or
    with `defaults` the product's TrainConfig at this batch size; one epoch at most."""
    from models.retrieval.training import TrainConfig

    if defaults:
        return TrainConfig(epochs=1, batch_size=batch_size, seed=seed, max_steps=max_steps)
    return TrainConfig(
        epochs=1,
        batch_size=batch_size,
        extra_negatives=0,
        hard_negatives=False,
        logq_correction=True,
        seed=seed,
        max_steps=max_steps,
    )


def run_towerflow(catalog, train_set, tower, cfg) -> dict:
    from models.retrieval.training import train

    started: list[float] = []  # CPU clock at train's first log line (the work budget), as its loop starts

    def log(message: str) -> None:
        if not started:
            started.append(time.process_time())

    result = train(catalog, train_set, tower, cfg, valid=None, log=log)
    return {
        "examples": result.examples,
        "seconds": result.seconds,
        "cpu_seconds": time.process_time() - started[0],  # the loop, as `seconds`: no model construction
        "steps": result.steps,
        "loss": result.history[0]["loss"],
        "loop_seconds": result.history[0]["train_seconds"],
        "epoch_examples": len(train_set),
    }


def tutorial_dataset(train_set, n_items: int, negatives: int, seed: int):
    """The per-example Dataset tutorial code writes. Built from the same train rows as
    towerflow's tensors (rows are sorted by user, then time), held as Python lists/sets."""
    import torch
    from torch.utils.data import Dataset

    class Interactions(Dataset):
        def __init__(self) -> None:
            self.sequences: dict[int, list[int]] = {}  # user -> positives in time order
            self.examples: list[tuple[int, int]] = []  # (user, position of the target in its sequence)
            for user, item in zip(train_set.user.tolist(), train_set.target.tolist()):
                seq = self.sequences.setdefault(user, [])
                self.examples.append((user, len(seq)))
                seq.append(item)
            self.positives = {u: set(s) for u, s in self.sequences.items()}
            self.user_hash = train_set.user_hash.tolist()  # user -> [n_hashes buckets]
            self.L = train_set.history.shape[1]
            self.rng = random.Random(seed)

        def __len__(self) -> int:
            return len(self.examples)

        def __getitem__(self, i: int) -> dict:
            user, p = self.examples[i]
            seq = self.sequences[user]
            history = seq[max(0, p - self.L) : p]
            history = [-1] * (self.L - len(history)) + history  # left-padded, latest last
            negs = []
            while len(negs) < negatives:  # uniform negatives, rejecting the user's positives
                j = self.rng.randrange(n_items)
                if j not in self.positives[user]:
                    negs.append(j)
            return {
                "user_hash": torch.tensor(self.user_hash[user]),
                "history": torch.tensor(history),
                "target": torch.tensor(seq[p]),
                "negatives": torch.tensor(negs, dtype=torch.long),
            }

    ds = Interactions()
    for i in (0, len(ds) // 2, len(ds) - 1):  # the same examples as towerflow's tensors
        ex = ds[i]
        assert ex["target"] == train_set.target[i] and torch.equal(ex["history"], train_set.history[i]), i
    return ds


def run_reference(catalog, train_set, tower, cfg, negatives: int, max_examples: int | None) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from models.retrieval.losses import info_nce
    from models.retrieval.towers import TwoTower
    from models.retrieval.training import _log_q, make_optimizers, optimizer_step

    built = time.perf_counter()
    ds = tutorial_dataset(train_set, len(catalog), negatives, cfg.seed)
    build_seconds = time.perf_counter() - built
    torch.manual_seed(cfg.seed)
    model = TwoTower(tower)
    opts = make_optimizers(model, cfg)  # the trainer's own optimizers: only the data path differs
    log_q = _log_q(train_set, len(catalog), cfg.batch_size, 0)  # (N,) the trainer's logQ
    loader = DataLoader(
        ds, batch_size=cfg.batch_size, shuffle=True, num_workers=0, generator=torch.Generator().manual_seed(cfg.seed)
    )
    model.train()
    examples, steps, losses, data_seconds = 0, 0, [], 0.0
    cpu = time.process_time()
    t0 = time.perf_counter()
    waited = t0
    for batch in loader:
        data_seconds += time.perf_counter() - waited
        pos = batch["target"]  # (B,)
        if len(pos) < 2:
            continue
        hist = batch["history"]  # (B, L)
        u = model.users(catalog, batch["user_hash"], hist)  # (B, D): the same model call as the trainer
        v_pos = model.item(catalog.features(pos))  # (B, D)
        extra = {}
        if negatives:
            neg = batch["negatives"]  # (B, K)
            extra = {"v_hard": model.item(catalog.features(neg)), "hard_ids": neg}  # (B, K, D), (B, K)
        loss = info_nce(u, v_pos, pos, temperature=cfg.temperature, log_q=log_q[pos], **extra)
        optimizer_step(model, opts, loss, cfg.clip_norm)  # the trainer's own step
        losses.append(loss.item())
        steps += 1
        examples += len(pos)
        if max_examples and examples >= max_examples:
            break
        waited = time.perf_counter()
    seconds = time.perf_counter() - t0
    return {
        "examples": examples,
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "steps": steps,
        "loss": sum(losses) / len(losses),
        "data_seconds": data_seconds,
        "build_seconds": build_seconds,
        "epoch_examples": len(ds),
    }


def child(side: str, tensors: Path, args) -> None:
    if args.code_root:  # the baseline: another revision's `models` (this script's own code runs it)
        sys.path.insert(0, str(args.code_root))
        for name in [m for m in sys.modules if m == "models" or m.startswith("models.")]:
            del sys.modules[name]
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    catalog, train_set, tower = load(tensors, args.dim)
    loaded_mib = _rss_mib()
    steps = -(-args.train_examples // args.batch_size) if args.train_examples else None
    cfg = train_config(args.batch_size, args.seed, args.trainer_defaults, steps)
    out = (
        run_reference(catalog, train_set, tower, cfg, args.negatives, args.max_examples)
        if side == "reference"
        else run_towerflow(catalog, train_set, tower, cfg)
    )
    out.update(
        side=side,
        threads=torch.get_num_threads(),
        loaded_rss_mib=loaded_mib,
        hwm_mib=_hwm_mib(),
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )  # Linux: KiB
    print(json.dumps(out))


def export_revision(rev: str, workdir: Path) -> Path:
    """workdir/baseline-<commit>: the files of git revision `rev` (git archive), made once."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    folder = workdir / f"baseline-{commit[:12]}"
    if not (folder / "models").is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def measure(side: str, tensors: Path, args) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_training",
        "--child",
        side,
        "--tensors",
        str(tensors),
        "--batch-size",
        str(args.batch_size),
        "--dim",
        str(args.dim),
        "--negatives",
        str(args.negatives),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--max-examples",
        str(args.max_examples),
        "--train-examples",
        str(args.train_examples),
    ]
    if args.trainer_defaults:
        cmd.append("--trainer-defaults")
    if side == "baseline":
        cmd += ["--code-root", str(args.baseline_root)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(
            f"bench_training: the {side} run on {tensors} failed (exit {proc.returncode}); its stderr is above"
        )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["examples_per_s"] = out["examples"] / out["seconds"]
    out["examples_per_cpu_s"] = out["examples"] / out["cpu_seconds"]
    _log(
        f"{side} on {tensors.parent.name}: {out['examples']:,} examples in {out['seconds']:.1f} s "
        f"({out['examples_per_s']:,.0f}/s; {out['cpu_seconds']:.1f} CPU s, {out['examples_per_cpu_s']:,.0f}/CPU s), "
        f"{time.perf_counter() - started:.1f} s with start-up"
    )
    return out


# --- the table ------------------------------------------------------------------------------


def summarise(runs: list[dict]) -> dict:
    """Median examples/s over repeats; the largest peak RSS."""
    first = dict(runs[0])
    first["examples_per_s"] = statistics.median(r["examples_per_s"] for r in runs)
    first["examples_per_cpu_s"] = statistics.median(r["examples_per_cpu_s"] for r in runs)
    first["seconds"] = statistics.median(r["seconds"] for r in runs)
    first["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    first["loaded_rss_mib"] = max(r["loaded_rss_mib"] for r in runs)
    if "data_seconds" in first:
        first["data_share"] = statistics.median(r["data_seconds"] / r["seconds"] for r in runs)
    return first


def print_table(args, rows: list[tuple[dict, int, dict[str, dict], dict[str, list[float]]]]) -> None:
    first = next(iter(rows[0][2].values()))
    trainer = (
        "the product's TrainConfig (512 uniform + hard negatives, content alignment)"
        if args.trainer_defaults
        else "in-batch InfoNCE (logQ)"
    )
    print(
        f"# one epoch, mean encoder, B={args.batch_size}, D={args.dim}, L={HISTORY_LEN}; trainer sides: {trainer}; "
        f"reference: in-batch InfoNCE + K={args.negatives} Python-sampled negatives per row; "
        f"baseline: the trainer at {args.baseline or '-'}; torch threads={first['threads']}, "
        f"repeats={args.repeats} (median)"
    )
    print(
        "# absolute figures are noisy (a shared machine); the ratios compare runs made back to back; "
        "ex/CPU s counts only the side's own CPU time"
    )
    head = (
        f"{'items':>10}  {'users':>7}  {'train ex':>9}  {'side':<10}  {'timed ex':>9}  {'seconds':>8}"
        f"  {'ex/s':>9}  {'ex/CPU s':>9}  {'peak RSS MiB':>12}  {'loaded RSS':>10}  note"
    )
    print(head)
    for scen, n_train, outs, ratios in rows:
        for out in outs.values():
            if out["side"] != "reference":
                capped = out["examples"] < n_train
                note = f"{'capped' if capped else 'full epoch'}, {out['steps']} steps, loss {out['loss']:.3f}"
            else:
                capped = out["examples"] < out["epoch_examples"]
                note = (
                    f"{'capped, ex/s extrapolated; ' if capped else 'full epoch; '}"
                    f"input pipeline {out['data_share']:.0%} of time, loss {out['loss']:.3f}"
                )
            print(
                f"{scen['n_items']:>10,}  {scen['n_users']:>7,}  {n_train:>9,}  {out['side']:<10}"
                f"  {out['examples']:>9,}  {out['seconds']:>8.1f}  {out['examples_per_s']:>9,.0f}"
                f"  {out['examples_per_cpu_s']:>9,.0f}  {out['peak_rss_mib']:>12,.0f}  {out['loaded_rss_mib']:>10,.0f}  {note}"
            )
        for name, rs in ratios.items():
            spread = f" (per repeat {', '.join(f'{r:.2f}' for r in rs)})" if len(rs) > 1 else ""
            goal = f" (goal >= {TARGET_RATIO:g}x)" if name.endswith("/reference ex/s") else ""
            print(f"{'':>10}  ratio {name}: {statistics.median(rs):.2f}x{goal}{spread}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run: 50k events, 1k / 100k items")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where generated data, warehouses and tensors are cached (default: a new temp folder, removed afterwards)",
    )
    ap.add_argument(
        "--max-examples",
        type=int,
        default=None,
        help="cap on the reference's examples (default 100,000; 5,000 with --quick; 0 = full epoch)",
    )
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=64, help="embedding size of both towers")
    ap.add_argument("--negatives", type=int, default=4, help="K: the reference's sampled negatives per row")
    ap.add_argument("--repeats", type=int, default=1, help="runs per side; the table shows medians")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in both children (0: torch default). 1 by default: next to other "
        "CPU-heavy work, intra-op threads that outnumber the free cores make a step's time erratic",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--baseline",
        default=None,
        help="git revision whose trainer runs as the 'baseline' side (exported under --workdir)",
    )
    ap.add_argument(
        "--sides",
        default=None,
        help="comma-separated sides to run (default: towerflow,reference, and baseline with --baseline)",
    )
    ap.add_argument(
        "--trainer-defaults",
        action="store_true",
        help="trainer sides use the product's TrainConfig (uniform + hard negatives, content alignment)",
    )
    ap.add_argument(
        "--train-examples",
        type=int,
        default=0,
        help="cap on the trainer sides' examples (whole batches; 0 = a full epoch)",
    )
    ap.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--code-root", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--tensors", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--prepare", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.prepare:
        print(prepare(args.workdir, json.loads(args.prepare)))
        return 0
    if args.max_examples is None:
        args.max_examples = 5_000 if args.quick else 100_000
    if args.child:
        child(args.child, args.tensors, args)
        return 0
    if args.repeats < 1 or args.batch_size < 2 or args.max_examples < 0 or args.negatives < 0:
        ap.error("--repeats >= 1, --batch-size >= 2, --max-examples >= 0 and --negatives >= 0 are required")
    sides = (
        tuple(args.sides.split(","))
        if args.sides
        else ("towerflow", "reference") + (("baseline",) if args.baseline else ())
    )
    if not set(sides) <= set(SIDES) or ("baseline" in sides) != bool(args.baseline):
        ap.error(f"--sides takes {', '.join(SIDES)}; baseline goes with --baseline REV (and only with it)")

    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="towerflow-bench-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    if args.baseline:
        args.baseline_root = export_revision(args.baseline, workdir)
    started = time.perf_counter()
    rows = []
    pairs = [(a, b) for a, b in (("towerflow", "reference"), ("towerflow", "baseline")) if a in sides and b in sides]
    try:
        for scen in scenarios(args.quick):
            tensors = ensure_prepared(workdir, scen)
            runs: dict[str, list[dict]] = {s: [] for s in sides}
            ratios: dict[str, list[float]] = {}
            for r in range(args.repeats):
                order = sides if r % 2 == 0 else sides[::-1]  # alternate, so drift in load cancels
                got = {side: measure(side, tensors, args) for side in order}
                for side in sides:
                    runs[side].append(got[side])
                for a, b in pairs:
                    for unit in ("ex/s", "ex/CPU s"):
                        key = "examples_per_s" if unit == "ex/s" else "examples_per_cpu_s"
                        ratios.setdefault(f"{a}/{b} {unit}", []).append(got[a][key] / got[b][key])
            outs = {side: summarise(runs[side]) for side in sides}
            rows.append((scen, next(iter(outs.values()))["epoch_examples"], outs, ratios))
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    _log(f"done in {time.perf_counter() - started:.0f} s")
    print_table(args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
