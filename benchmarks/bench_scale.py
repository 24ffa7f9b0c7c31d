"""The whole graph at the size our users bring, run as a user runs it.

    python benchmarks/bench_scale.py [--users 100000] [--items 1000000] [--events 10000000]
                                     [--workdir DIR] [--select '*'] [--keep-landing]
                                     [--config-json JSON] [--keep-home]
                                     [--landing DIR] [--goal-minutes 15]

1. `towerflow generate --users U --items I --events E` into a fresh TOWERFLOW_HOME (with
   --keep-landing, a landing folder generated earlier with the same arguments is reused;
   generation is timed either way, but it is not part of the graph's figure). With --landing
   DIR, a copy of that landing folder instead (MovieLens: `towerflow import-movielens` wrote it;
   the original is never written to): `--landing DIR --goal-minutes 10` is the whole graph on
   MovieLens at the product's defaults.
2. `dagster asset materialize -m orchestration.definitions --select '*'` with the default
   configs (or the run config given with --config-json, passed to Dagster as it is, e.g.
   '{"ops": {"two_tower_model": {"config": {"max_examples": 500000, "min_epochs": 0}}}}' to
   measure every other step under a smaller training budget: the table prints it), in a
   child process, with DAGSTER_HOME inside the home (telemetry off).
3. While it runs, the resident set and the CPU time (user + system, reaped children included)
   of the whole process tree are sampled every 0.5 s from /proc. Afterwards the run's Dagster
   event log gives every step's (asset's or check's) start and end; each step's peak is the
   largest tree RSS sampled while it ran, its CPU seconds what the tree used between the samples
   around its start and end. The executor runs one step at a time (orchestration/definitions.py),
   so that is the step's own CPU time. On a shared machine wall seconds measure the neighbours as
   much as the code; CPU seconds far less (though threads that spin-wait for a core they lost to
   a neighbour still count), so compare CPU seconds between runs on a loaded machine.

With --keep-home the home of the previous run stays (no generation): `--keep-home --select
'model_evaluation*'` measures the steps from a fixed break on, on the data and model already
there.

Prints one table (step, kind, seconds, CPU seconds, peak RSS) and the totals against the goals:
the whole graph within 15 minutes wall (--goal-minutes) and 8 GiB peak on 2 cores, and the load
average before and after. Nothing here asserts a timing.
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


TICK = os.sysconf("SC_CLK_TCK")


def tree_usage(root_pid: int) -> tuple[int, float]:
    """(resident bytes, CPU seconds) of root_pid and all its descendants, read from /proc. CPU
    seconds: user + system of every live process plus its reaped children's (cutime, cstime), so
    a short-lived subprocess still counts once its parent has waited for it."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    cpu: dict[int, float] = {}
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
        fields = stat[stat.rindex(")") + 2 :].split()  # after "(comm)": state, ppid, ...; utime is field 14 of stat
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = pages * PAGE
        cpu[pid] = sum(int(x) for x in fields[11:15]) / TICK  # utime, stime, cutime, cstime
    total, seconds, todo = 0, 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        seconds += cpu.get(pid, 0.0)
        todo += children.get(pid, [])
    return total, seconds


class Sampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.stop = pid, every, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.time(), *tree_usage(self.pid)))
            self.stop.wait(self.every)

    def peak(self, start: float = 0.0, end: float = float("inf")) -> int:
        inside = [b for t, b, _ in self.samples if start <= t <= end]
        return max(inside, default=0)

    def cpu(self, start: float, end: float) -> float:
        """CPU seconds the tree used from the last sample at or before `start` to the first at or
        after `end` (the step plus at most one sampling interval on either side)."""
        before = [c for t, _, c in self.samples if t <= start]
        after = [c for t, _, c in self.samples if t >= end]
        last = self.samples[-1][2] if self.samples else 0.0
        return (after[0] if after else last) - (before[-1] if before else 0.0)


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


def step_table(dagster_home: Path, sampler: Sampler) -> list[tuple[str, str, float, float, int, str]]:
    """(step, kind, seconds, CPU seconds, peak bytes, status) for every step of the newest run,
    in start order."""
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
                sampler.cpu(t0, t1),
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
    ap.add_argument(
        "--landing",
        type=Path,
        default=None,
        help="Copy this landing folder (events/, items/) into the fresh home instead of generating "
        "(e.g. MovieLens from `towerflow import-movielens`); --users/--items/--events are then unused.",
    )
    ap.add_argument("--goal-minutes", type=float, default=GOAL_SECONDS / 60, help="The wall-clock goal.")
    args = ap.parse_args()
    goal_seconds = 60 * args.goal_minutes
    if args.landing is not None and not (args.landing / "events").is_dir():
        raise SystemExit(f"--landing {args.landing}: no events/ folder there")
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
    elif args.landing is not None:
        _log(f"copying landing files from {args.landing}")
        shutil.copytree(args.landing, home / "landing")
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
    load_before = os.getloadavg()
    code, seconds, sampler = run_measured(cmd, env, log_path)
    load_after = os.getloadavg()
    rows = step_table(home / "dagster", sampler)

    data = (
        f"landing files from {args.landing}"
        if args.landing is not None
        else f"{args.users:,} users, {args.items:,} items, {args.events:,} events"
    )
    print(
        f"\nwhole graph: {data}; "
        f"{os.cpu_count()} cores; dagster asset materialize --select '{args.select}'; "
        + (f"run config {args.config_json}" if args.config_json else "default configs")
    )
    if gen_seconds is not None:
        print(f"towerflow generate (not counted below): {gen_seconds:.1f} s, peak {gib(gen_peak)} GiB")
    print(
        f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after: "
        + ("quiet" if max(load_before[0], load_after[0]) < 1.5 else "LOADED, compare CPU seconds, not wall")
    )
    cpu_total = sampler.samples[-1][2] if sampler.samples else 0.0
    head = f"{'step':<52} {'kind':<6} {'seconds':>9} {'share':>6} {'CPU s':>8} {'CPU share':>9} {'peak RSS GiB':>13}  status"
    print(head)
    print("-" * len(head))
    for step, kind, s, c, peak, status in rows:
        print(
            f"{step:<52} {kind:<6} {s:>9.1f} {s / seconds:>6.1%} {c:>8.1f} {c / max(cpu_total, 1e-9):>9.1%} "
            f"{gib(peak):>13}  {status}"
        )
    peak = sampler.peak()
    print("-" * len(head))
    print(
        f"{'total (process, start-up included)':<59} {seconds:>9.1f} {'':>6} {cpu_total:>8.1f} {'':>9} {gib(peak):>13}  "
        f"{'exit 0' if code == 0 else f'exit {code}'}"
    )
    print(
        f"\ngoal: <= {goal_seconds / 60:g} min wall: {seconds / 60:.1f} min = {seconds / goal_seconds:.2f}x the budget "
        f"({'met' if seconds <= goal_seconds and code == 0 else 'NOT met'}); <= {GOAL_BYTES / 2**30:.0f} GiB peak: "
        f"{gib(peak)} GiB = {peak / GOAL_BYTES:.2f}x ({'met' if peak <= GOAL_BYTES else 'NOT met'})"
    )
    if code:
        print(f"the run failed: the end of {log_path} says why")
    sys.exit(code)


if __name__ == "__main__":
    main()
