"""One more day of events against the whole history: what re-running ingest + cleaning costs.

    python benchmarks/bench_one_more_day.py [--events 3000000] [--days 180] [--more-days 3] [--packed]
                                            [--partitioned] [--workdir DIR]

1. `towerflow generate`'s generator writes `days + more_days` daily landing files (one file per
   day of the window, CSV / JSONL.gz / Parquet in turn, 1% dirty rows: duplicates across files,
   conflicting event_ids, bad lines), `events` over the history's days. With --packed the
   history lands as 3 files instead (one per format, same rows), as `towerflow generate` lays
   out a history: fewer, larger files make the history's ingest cheaper, so the ratio is higher.
2. A fresh home gets the history's files; `dagster.materialize` runs what a re-run of the graph
   runs up to the clean tables: `raw_events`, `clean_events` and their checks (file lines,
   readability, row and file accounting, the Great Expectations suite). That is the history's
   cost. Then, one day at a time, the next day's file lands and the same selection runs again:
   one more day's cost. Last, the same selection with `full_refresh: true` (every file
   cleaned and validated again, what every run did before cleaning went file by file), and its
   tables are compared with the incremental ones (count and an order-free hash per table):
   exit 1 if they differ.
   With --partitioned the two event assets take one partition per landing file
   (TOWERFLOW_EVENT_PARTITIONS=files, orchestration/partitions.py): the history is one run over
   its files' partitions (a range), each more day one run of its new partition alone (what
   `new_events_sensor` requests), the full re-clean one run over every partition.
3. Before any timed run, a warm-up run on a tiny home imports Great Expectations and MLflow and
   the history home gets a copy of its MLflow store, so no timed run pays a one-off start.

Prints each run's seconds per step (from the run's event log) and in all, and the ratio of each
one-more-day run to the history's, measured in the same process. The goal (issue: one more day's
ingest + cleaning <= 15% of the whole history's) is reported, not asserted; on a shared machine
the ratio is the figure to quote, not the seconds.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOAL = 0.15
TABLES = {
    "clean_interactions": "SELECT count(*), sum(hash(event_id, user_id, item_id, event_type, ts, value, is_positive, "
    "is_negative, source_file, line, duplicate_count)::HUGEINT) FROM clean_interactions",
    "quarantined_events": "SELECT count(*), sum(hash(source_file, line, reason, event_id, user_id, item_id, "
    "event_type, timestamp_raw, value_raw, raw_line, extra)::HUGEINT) FROM quarantined_events",
    "cleaned_event_files": "SELECT count(*), sum(hash(path, raw_rows, clean_rows, duplicate_rows, "
    "quarantined_rows)::HUGEINT) FROM cleaned_event_files",
}


def _log(message: str) -> None:
    print(f"[bench_one_more_day] {message}", file=sys.stderr, flush=True)


def generate_days(out: Path, events: int, days: int, more: int) -> list[Path]:
    """One landing file per day (cached in `out` for the same arguments), in day order."""
    import json

    from models.sources.synthetic import generate

    total = events * (days + more) // days
    params = {"n_events": total, "days": days + more, "n_files": days + more, "seed": 0}
    summary = out / "generated.json"
    if not summary.exists() or any(json.loads(summary.read_text())["config"].get(k) != v for k, v in params.items()):
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        generate(out=out, n_users=max(total // 50, 100), n_items=max(total // 100, 50), log=lambda m: None, **params)
        _log(f"generated {total:,} events in {days + more} daily files ({time.perf_counter() - started:.0f} s)")
    return sorted((out / "events").iterdir())


def pack(days: list[Path], out: Path) -> list[Path]:
    """The history's daily files as one file per format (`--packed`: the default generator's
    layout, 3 files, with the same rows): CSV bodies appended under the first header, gzip
    members concatenated (one valid gzip stream), Parquet tables concatenated."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    by_format: dict[str, list[Path]] = {}
    for f in days:
        by_format.setdefault("".join(f.suffixes), []).append(f)
    packed = []
    for suffix, group in by_format.items():
        target = out / f"history{suffix}"
        if suffix == ".parquet":
            pq.write_table(pa.concat_tables([pq.read_table(f) for f in group], promote_options="default"), target)
        else:
            with open(target, "wb") as w:
                for i, f in enumerate(group):
                    data = f.read_bytes()
                    if suffix == ".csv" and i > 0:
                        data = data[data.index(b"\n") + 1 :]  # the header once
                    w.write(data)
        packed.append(target)
    return packed


def selection(partitions=None):
    from assets.clean.checks import clean_interactions_expectations, event_file_accounting, event_row_accounting
    from assets.clean.clean_interactions import build_clean_events
    from assets.ingest.checks import raw_events_files_readable, raw_file_lines_accounted
    from assets.ingest.raw_events import build_raw_events

    return [
        build_raw_events(partitions),
        build_clean_events(partitions),
        raw_events_files_readable,
        raw_file_lines_accounted,
        event_row_accounting,
        event_file_accounting,
        clean_interactions_expectations,
    ]


def run(home: Path, instance, full_refresh: bool = False, keys: list[str] | None = None) -> dict:
    """One run of the selection (over the partitions `keys`, first to last, when given);
    {step: seconds} from its event log, plus 'wall'."""
    import dagster as dg

    from orchestration.partitions import EVENT_FILES, partition_range
    from orchestration.resources import build_resources

    config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    if full_refresh:
        config["ops"] = {"clean_events": {"config": {"full_refresh": True}}}
    started = time.perf_counter()
    result = dg.materialize(
        selection(EVENT_FILES if keys else None),
        resources=build_resources(home),
        instance=instance,
        run_config=config,
        tags=partition_range(keys[0], keys[-1]) if keys else None,
    )
    wall = time.perf_counter() - started
    assert result.success
    starts, steps = {}, {}
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            steps[event.step_key] = entry.timestamp - starts[event.step_key]
    meta = result.asset_materializations_for_node("clean_events")[0].metadata
    return {
        "steps": steps,
        "wall": wall,
        "mode": meta["cleaning_mode"].value,
        "files": meta["files_cleaned"].value,
        "rows": meta["new_raw_rows"].value,
    }


def digests(home: Path) -> dict:
    import duckdb

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return {name: con.execute(q).fetchall()[0] for name, q in TABLES.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=3_000_000, help="events over the history's days")
    ap.add_argument("--days", type=int, default=180, help="days of history (one landing file each)")
    ap.add_argument("--more-days", type=int, default=3, help="days added one at a time after the history")
    ap.add_argument("--workdir", type=Path, default=None, help="landing files are cached here (default: a temp dir)")
    ap.add_argument(
        "--packed", action="store_true", help="the history in 3 files (one per format) instead of one file a day"
    )
    ap.add_argument(
        "--partitioned", action="store_true", help="one partition per landing file: each day's run is its partition's"
    )
    args = ap.parse_args(argv)

    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import dagster as dg

    work = args.workdir or Path(tempfile.mkdtemp(prefix="towerflow-one-more-day-"))
    files = generate_days(work / "landing-days", args.events, args.days, args.more_days)
    history, later = files[: args.days], files[args.days : args.days + args.more_days]
    if args.packed:
        history = pack(history, work / "landing-packed")

    warm = work / "warm"
    shutil.rmtree(warm, ignore_errors=True)
    (warm / "landing" / "events").mkdir(parents=True)
    (warm / "landing" / "events" / "a.csv").write_text(
        "event_id,user_id,item_id,event_type,timestamp\ne1,u1,i1,click,2024-01-01T00:00:00Z\n"
    )
    run(warm, dg.DagsterInstance.ephemeral())

    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    (home / "landing" / "events").mkdir(parents=True)
    for name in ("mlflow.db", "mlartifacts"):
        if (warm / name).is_dir():
            shutil.copytree(warm / name, home / name)
        elif (warm / name).exists():
            shutil.copy2(warm / name, home / name)
    for f in history:
        (home / "landing" / "events" / f.name).symlink_to(f)
    _log(f"history: {len(history)} files" + (", one partition each" if args.partitioned else ""))
    instance = dg.DagsterInstance.ephemeral()

    def partitions(files: list[Path]) -> list[str] | None:
        """The files' partitions, added as new_events_sensor adds them (unpartitioned: None)."""
        if not args.partitioned:
            return None
        from orchestration.partitions import EVENT_FILES

        instance.add_dynamic_partitions(EVENT_FILES.name, [f.name for f in files])
        return [f.name for f in files]

    runs = [("history", run(home, instance, keys=partitions(history)))]
    _log(f"history: {runs[0][1]['wall']:.1f} s")
    for i, f in enumerate(later, 1):
        (home / "landing" / "events" / f.name).symlink_to(f)
        runs.append((f"+ day {args.days + i}", run(home, instance, keys=partitions([f]))))
        _log(f"day {args.days + i}: {runs[-1][1]['wall']:.1f} s")
    incremental = digests(home)
    every = [*history, *later] if args.partitioned else None
    runs.append(("full re-clean", run(home, instance, full_refresh=True, keys=every and [f.name for f in every])))
    same = digests(home) == incremental

    steps = list(runs[0][1]["steps"])
    base = runs[0][1]
    base_steps = sum(base["steps"].values())
    names = [name for name, _ in runs]
    print(f"{'seconds per step':<44}" + "".join(f"{n:>16}" for n in names))
    for label, value in (
        ("cleaning mode", lambda r: r["mode"]),
        ("files cleaned", lambda r: f"{r['files']:,}"),
        ("raw rows cleaned", lambda r: f"{r['rows']:,}"),
    ):
        print(f"{label:<44}" + "".join(f"{value(r):>16}" for _, r in runs))
    for s in steps:
        print(f"{s[:44]:<44}" + "".join(f"{r['steps'].get(s, 0.0):>16.2f}" for _, r in runs))
    print(f"{'all steps':<44}" + "".join(f"{sum(r['steps'].values()):>16.2f}" for _, r in runs))
    print(f"{'  / history':<44}" + "".join(f"{sum(r['steps'].values()) / base_steps:>16.1%}" for _, r in runs))
    print(f"{'run wall (with Dagster run start / end)':<44}" + "".join(f"{r['wall']:>16.2f}" for _, r in runs))
    print(f"{'  / history':<44}" + "".join(f"{r['wall'] / base['wall']:>16.1%}" for _, r in runs))
    days = [sum(r["steps"].values()) / base_steps for name, r in runs if name.startswith("+")]
    print(
        f"\none more day / whole history (sum of steps): {', '.join(f'{d:.1%}' for d in days)} "
        f"(goal <= {GOAL:.0%}); tables after the incremental runs "
        f"{'equal' if same else 'DIFFER FROM'} a full re-clean"
    )
    if not same:
        print(f"incremental: {incremental}\nfull:        {digests(home)}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
