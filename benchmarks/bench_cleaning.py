"""Event cleaning: the DuckDB path (models/ingest/landing.py + sql/) vs a hand-written pandas
baseline (benchmarks/pandas_cleaning.py) on the same synthetic landing files.

    python -m benchmarks.bench_cleaning --sizes 1000000,10000000 [--workdir DIR] [--keep]

Each side runs in its own process, so peak RSS (VmHWM) is its own; seconds are wall time
from the first file read to the last output table, rows/s is raw landing rows / seconds.
`CleaningRules().sql_params()` is computed once and handed to both sides, so they apply the
same rules with the same "now" even if the configuration changes while the benchmark runs.
Prints one table. Targets (reported, not asserted): DuckDB >= 5x pandas rows/s, DuckDB peak
RSS <= 2 GiB at 10M events. Exits 1 if the two sides' counts differ (raw, clean, duplicate,
positive, negative and quarantined rows, quarantined rows per reason), printing the counts
that differ.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `benchmarks` importable for the children
    sys.path.insert(0, str(ROOT))

IMPLS = ("pandas", "duckdb")
TARGET_RATIO = 5.0
TARGET_DUCKDB_RSS_MIB = 2048


def landing_params(n_events: int) -> dict:
    """Generator arguments for one size: users and items scale with the events."""
    return {
        "n_users": max(n_events // 50, 100),
        "n_items": max(n_events // 100, 50),
        "n_events": n_events,
        "n_files": 3,
        "dirty_share": 0.01,
        "seed": 0,
    }


def ensure_landing(workdir: Path, n_events: int) -> tuple[Path, bool]:
    """workdir/landing-<n>, generated unless a complete copy with the same arguments is there.
    Returns the folder and whether this call generated it."""
    landing = workdir / f"landing-{n_events}"
    params = landing_params(n_events)
    summary = landing / "generated.json"  # written last by generate(): marks a complete folder
    if summary.exists():
        cfg = json.loads(summary.read_text())["config"]
        if all(cfg.get(k) == v for k, v in params.items()):
            return landing, False
        shutil.rmtree(landing)
    from models.sources.synthetic import generate

    started = time.perf_counter()
    generate(out=landing, **params, log=lambda m: None)
    _log(f"generated {n_events:,} events in {landing} ({time.perf_counter() - started:.1f} s)")
    return landing, True


def _log(message: str) -> None:
    print(f"[bench_cleaning] {message}", file=sys.stderr, flush=True)


# --- the two sides, each run in a child process --------------------------------------------


def encode_params(params: dict) -> str:
    return json.dumps(params, default=lambda v: {"$datetime": v.isoformat()})


def decode_params(text: str) -> dict:
    return json.loads(
        text, object_hook=lambda d: dt.datetime.fromisoformat(d["$datetime"]) if set(d) == {"$datetime"} else d
    )


def run_duckdb(landing: Path, db: Path, params: dict) -> tuple[float, dict]:
    import duckdb

    from models.ingest.landing import EVENTS, ingest_folder
    from models.clean.cleaning import clean_events
    from orchestration.resources import duckdb_memory_limit

    started = time.perf_counter()
    con = duckdb.connect(str(db), config={"memory_limit": duckdb_memory_limit()})
    ingest_folder(con, landing, EVENTS, log=lambda m: None)
    clean_events(con, params)
    seconds = time.perf_counter() - started

    raw = con.execute("SELECT count(*) FROM raw_events").fetchall()[0][0]
    clean, dups, pos, neg = con.execute(
        """SELECT count(*), coalesce(sum(duplicate_count), 0), count(*) FILTER (is_positive),
                  count(*) FILTER (is_negative) FROM clean_interactions"""
    ).fetchall()[0]
    reasons = dict(con.execute("SELECT reason, count(*) FROM quarantined_events GROUP BY 1 ORDER BY 1").fetchall())
    con.close()
    return seconds, {
        "raw_rows": raw,
        "clean": clean,
        "duplicates": int(dups),
        "positives": pos,
        "negatives": neg,
        "quarantined": sum(reasons.values()),
        "reasons": reasons,
    }


def run_pandas(landing: Path, params: dict) -> tuple[float, dict]:
    from benchmarks.pandas_cleaning import clean_events

    started = time.perf_counter()
    result = clean_events(landing, params)
    seconds = time.perf_counter() - started
    return seconds, result.counts()


def child(impl: str, landing: Path, db: Path, params: dict) -> None:
    seconds, counts = run_duckdb(landing, db, params) if impl == "duckdb" else run_pandas(landing, params)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent (which may have just
    # generated the data), VmHWM is this process's own high-water mark
    with open("/proc/self/status") as f:
        peak_mib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    print(json.dumps({"impl": impl, "seconds": seconds, "peak_rss_mib": peak_mib, "counts": counts}))


def measure(impl: str, landing: Path, workdir: Path, params: str) -> dict:
    db = workdir / "bench.duckdb"
    for stale in (db, Path(f"{db}.wal"), Path(f"{db}.tmp")):  # a fresh database every run
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_cleaning",
            "--child",
            impl,
            "--landing",
            str(landing),
            "--db",
            str(db),
            "--params",
            params,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(
            f"bench_cleaning: the {impl} run on {landing} failed (exit {proc.returncode}); its stderr is above"
        )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    _log(f"{impl} on {landing.name}: {out['seconds']:.1f} s timed, {time.perf_counter() - started:.1f} s with start-up")
    return out


# --- comparison and the table --------------------------------------------------------------


def count_differences(a: dict, b: dict) -> list[tuple[str, int, int]]:
    """(name, pandas, duckdb) for every count that differs."""
    diffs = [(k, a[k], b[k]) for k in a if k != "reasons" and a[k] != b[k]]
    for r in sorted(set(a["reasons"]) | set(b["reasons"])):
        x, y = a["reasons"].get(r, 0), b["reasons"].get(r, 0)
        if x != y:
            diffs.append((f"quarantined[{r}]", x, y))
    return diffs


def print_table(results: list[tuple[int, dict, dict]]) -> None:
    head = (
        f"{'events':>12}  {'impl':<6}  {'seconds':>8}  {'rows/s':>11}  {'peak RSS MiB':>12}"
        f"  {'clean':>11}  {'dups':>8}  {'quarantined':>11}"
    )
    print(head)
    for n, pd_out, db_out in results:
        for out in (pd_out, db_out):
            c = out["counts"]
            print(
                f"{n:>12,}  {out['impl']:<6}  {out['seconds']:>8.2f}  {out['rows_per_s']:>11,.0f}"
                f"  {out['peak_rss_mib']:>12,.0f}  {c['clean']:>11,}  {c['duplicates']:>8,}"
                f"  {c['quarantined']:>11,}"
            )
        ratio = db_out["rows_per_s"] / pd_out["rows_per_s"]
        print(
            f"{'':>12}  ratio duckdb/pandas rows/s: {ratio:.1f}x (target >= {TARGET_RATIO:g}x); "
            f"duckdb peak RSS {db_out['peak_rss_mib']:,.0f} MiB (target <= {TARGET_DUCKDB_RSS_MIB:,} "
            "MiB at 10M)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000000", help="comma-separated event counts, e.g. 1000000,10000000")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where landing data (cached per size) and the DuckDB file go (default: a new temporary folder)",
    )
    ap.add_argument(
        "--keep", action="store_true", help="keep the generated landing data and the DuckDB file afterwards"
    )
    ap.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    ap.add_argument("--landing", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.landing, args.db, decode_params(args.params))
        return 0

    try:
        sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not sizes or min(sizes) < 1:
        ap.error(f"--sizes needs at least one positive size, got {args.sizes!r}")
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="towerflow-bench-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    from models.clean.rules import CleaningRules

    params = encode_params(CleaningRules().sql_params())
    created: list[Path] = []
    results, failures = [], []
    try:
        for n in sizes:
            landing, generated = ensure_landing(workdir, n)
            if generated:
                created.append(landing)
            summary = json.loads((landing / "generated.json").read_text())
            outs = {}
            for impl in IMPLS:
                out = measure(impl, landing, workdir, params)
                out["rows_per_s"] = summary["total_rows"] / out["seconds"]
                outs[impl] = out
            results.append((n, outs["pandas"], outs["duckdb"]))
            diffs = count_differences(outs["pandas"]["counts"], outs["duckdb"]["counts"])
            if diffs:
                failures.append((n, diffs))
    finally:
        if not args.keep:
            for path in created:
                shutil.rmtree(path, ignore_errors=True)
            for name in ("bench.duckdb", "bench.duckdb.wal", "bench.duckdb.tmp"):
                p = workdir / name
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            if own_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
        else:
            _log(f"kept {workdir}")

    print_table(results)
    for n, diffs in failures:
        print(f"\nCOUNTS DIFFER at {n:,} events (pandas vs duckdb):")
        for name, a, b in diffs:
            print(f"  {name:<40} pandas {a:>12,}   duckdb {b:>12,}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
