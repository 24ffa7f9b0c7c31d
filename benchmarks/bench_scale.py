"""The whole graph at the size our users bring, run as a user runs it.

    python benchmarks/bench_scale.py [--users 100000] [--items 1000000] [--events 10000000]
                                     [--workdir DIR] [--select '*'] [--keep-landing]
                                     [--config-json JSON] [--keep-home]

1. `towerflow generate --users U --items I --events E` into a fresh TOWERFLOW_HOME (with
   --keep-landing, a landing folder generated earlier with the same arguments is reused;
   generation is timed either way, but it is not part of the graph's figure).
2. `dagster asset materialize -m orchestration.definitions --select '*'` with the default
   configs (or the run config given with --config-json, passed to Dagster as it is, e.g.
   '{"ops": {"two_tower_model": {"config": {"max_examples": 500000, "min_epochs": 0}}}}' to
   measure every other step under a smaller training budget: the table prints it), in a
   child process, with DAGSTER_HOME inside the home (telemetry off).
3. While it runs, the resident set of the whole process tree is sampled every 0.5 s from /proc.
   Afterwards the run's Dagster event log gives every step's (asset's or check's) start and
   end; each step's peak is the largest tree RSS sampled while it ran.

With --keep-home the home of the previous run stays (no generation): `--keep-home --select
'model_evaluation*'` measures the steps from a fixed break on, on the data and model already
there.

Prints one table (step, kind, seconds, peak RSS) and the totals against the goals: the whole
graph within 15 minutes wall and 8 GiB peak on 2 cores. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GOAL_SECONDS = 15 * 60
GOAL_BYTES = 8 * 2**30
PAGE = os.sysconf("SC_PAGE_SIZE")


def _log(message: str) -> None:
    print(f"[bench_scale] {message}", file=sys.stderr, flush=True)


def tree_rss(root_pid: int) -> int:
    """Resident bytes of root_pid and all its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry.name}/statm") as f:
                pages = int(f.read().split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])  # fields after "(comm)": state, ppid, ...
        pid = int(entry.name)
        children.setdefault(ppid, []).append(pid)
        rss[pid] = pages * PAGE
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


class Sampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.stop = pid, every, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.time(), tree_rss(self.pid)))
            self.stop.wait(self.every)

    def peak(self, start: float = 0.0, end: float = float("inf")) -> int:
        inside = [b for t, b in self.samples if start <= t <= end]
        return max(inside, default=0)


def run_measured(cmd: list[str], env: dict, log_path: Path) -> tuple[int, float, Sampler]:
    """Run cmd with its output in log_path; returns (exit code, seconds, RSS sampler)."""
    t0 = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        sampler = Sampler(proc.pid)
        sampler.start()
        code = proc.wait()
    sampler.stop.set()
    sampler.join()
    return code, time.perf_counter() - t0, sampler


def step_table(dagster_home: Path, sampler: Sampler) -> list[tuple[str, str, float, int, str]]:
    """(step, kind, seconds, peak bytes, status) for every step of the newest run, in start order."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    import dagster as dg

    instance = dg.DagsterInstance.get()
    run = instance.get_runs(limit=1)[0]
    starts, ends, status, assets, checks = {}, {}, {}, set(), set()
    for entry in instance.all_logs(run.run_id):
        ev = entry.dagster_event
        if ev is None or not entry.step_key:
            continue
        kind = ev.event_type_value
        if kind == "STEP_START":
            starts[entry.step_key] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"):
            ends[entry.step_key] = entry.timestamp
            status[entry.step_key] = kind.removeprefix("STEP_").lower()
        elif kind == "ASSET_MATERIALIZATION":
            assets.add(entry.step_key)
        elif kind == "ASSET_CHECK_EVALUATION":
            checks.add(entry.step_key)
    rows = []
    for step, t0 in sorted(starts.items(), key=lambda kv: kv[1]):
        t1 = ends.get(step, time.time())
        # a step shorter than the sampling interval gets the samples on either side of it
        rows.append(
            (
                step,
                "asset" if step in assets else "check" if step in checks else "-",  # "-": failed before either
                t1 - t0,
                sampler.peak(t0 - sampler.every, t1 + sampler.every),
                status.get(step, "unfinished"),
            )
        )
    return rows


def gib(b: int) -> str:
    return f"{b / 2**30:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/towerflow-scale"))
    ap.add_argument("--select", default="*", help="Dagster asset selection (default: the whole graph).")
    ap.add_argument(
        "--keep-landing", action="store_true", help="Reuse landing files generated earlier with the same arguments."
    )
    ap.add_argument(
        "--config-json",
        default="",
        help="Run config for `dagster asset materialize` (default: none, the default configs).",
    )
    ap.add_argument(
        "--keep-home",
        action="store_true",
        help="Keep the previous run's home (no generation): resume a broken run with --select 'STEP*'.",
    )
    args = ap.parse_args()
    if args.config_json:
        json.loads(args.config_json)  # fail here, not after generating the data

    home = args.workdir / "home"
    cached = args.workdir / "landing-cache"
    key = {"users": args.users, "items": args.items, "events": args.events}
    env = {
        **os.environ,
        "TOWERFLOW_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
    }
    gen_seconds, gen_peak = None, None
    if args.keep_home and not (home / "landing").is_dir():
        raise SystemExit(f"--keep-home: no previous run's home at {home}")
    if not args.keep_home:
        shutil.rmtree(home, ignore_errors=True)
        (home / "dagster").mkdir(parents=True)
        (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    args.workdir.mkdir(parents=True, exist_ok=True)
    reuse = (
        args.keep_landing and (cached / "key.json").exists() and json.loads((cached / "key.json").read_text()) == key
    )
    if args.keep_home:
        _log(f"keeping the previous run's home {home}")
    elif reuse:
        _log(f"reusing landing files in {cached}")
        shutil.copytree(cached / "landing", home / "landing")
    else:
        cmd = [
            str(BIN / "towerflow"),
            "generate",
            "--users",
            str(args.users),
            "--items",
            str(args.items),
            "--events",
            str(args.events),
        ]
        _log(" ".join(cmd))
        code, gen_seconds, sampler = run_measured(cmd, env, args.workdir / "generate.log")
        if code:
            raise SystemExit(f"generate failed (exit {code}); see {args.workdir / 'generate.log'}")
        gen_peak = sampler.peak()
        if args.keep_landing:
            shutil.rmtree(cached, ignore_errors=True)
            shutil.copytree(home / "landing", cached / "landing")
            (cached / "key.json").write_text(json.dumps(key))

    cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "orchestration.definitions", "--select", args.select]
    if args.config_json:
        cmd += ["--config-json", args.config_json]
    log_path = args.workdir / "materialize.log"
    _log(f"{' '.join(cmd)}  (log: {log_path})")
    code, seconds, sampler = run_measured(cmd, env, log_path)
    rows = step_table(home / "dagster", sampler)

    print(
        f"\nwhole graph: {args.users:,} users, {args.items:,} items, {args.events:,} events; "
        f"{os.cpu_count()} cores; dagster asset materialize --select '{args.select}'; "
        + (f"run config {args.config_json}" if args.config_json else "default configs")
    )
    if gen_seconds is not None:
        print(f"towerflow generate (not counted below): {gen_seconds:.1f} s, peak {gib(gen_peak)} GiB")
    head = f"{'step':<40} {'kind':<6} {'seconds':>9} {'share':>6} {'peak RSS GiB':>13}  status"
    print(head)
    print("-" * len(head))
    for step, kind, s, peak, status in rows:
        print(f"{step:<40} {kind:<6} {s:>9.1f} {s / seconds:>6.1%} {gib(peak):>13}  {status}")
    peak = sampler.peak()
    print("-" * len(head))
    print(
        f"{'total (process wall, start-up included)':<47} {seconds:>9.1f} {'':>6} {gib(peak):>13}  "
        f"{'exit 0' if code == 0 else f'exit {code}'}"
    )
    print(
        f"\ngoal: <= {GOAL_SECONDS / 60:.0f} min wall: {seconds / 60:.1f} min = {seconds / GOAL_SECONDS:.2f}x the budget "
        f"({'met' if seconds <= GOAL_SECONDS and code == 0 else 'NOT met'}); <= {GOAL_BYTES / 2**30:.0f} GiB peak: "
        f"{gib(peak)} GiB = {peak / GOAL_BYTES:.2f}x ({'met' if peak <= GOAL_BYTES else 'NOT met'})"
    )
    if code:
        print(f"the run failed: the end of {log_path} says why")
    sys.exit(code)


if __name__ == "__main__":
    main()
