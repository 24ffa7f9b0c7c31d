"""The online service under load at 1M items, per kind of request: `towerflow serve` against
a load client in its own process, beside the in-process call, plus the index autotune.

    python benchmarks/bench_serving.py [--source-home /work/scale/run1/home] [--work DIR]
        [--levels "known:50,200,500;session:200;rank:200"] [--seconds 30] [--rank-candidates 100]
        [--clients httpx,raw] [--client-python PY] [--skip autotune,inprocess,load,reload]

Setup (cached in --work, never written into --source-home): the source home's warehouse is
copied (the reload step adds items to it) and its champion checkpoint linked; then the
library calls the assets make build item_embeddings (with item features), item_index (a full
IVF build that tunes its nprobe on 1,000 real user vectors) and user_histories, and a ranker of
the product's default size (seeded, untrained: a request costs the same whatever its weights)
is promoted for `rank: true`.

Kinds of request (`request_bodies`): `known` (a random known user, k 10), `session` (no user
id, three random items as recent_items: the item-space mean) and `rank` (a random known user,
`rank: true`: the ranker orders --rank-candidates retrieved items, the service's
--rank-candidates).

Figures, all in one run:
1. Index autotune: the setting the build chose, its recall@10 against exact search on 2,000
   other users (the recall check's sample), and single-query search time against exact
   IndexFlatIP over the same vectors (one thread); the former default nprobe 32 beside it.
2. In process: `Service.answer` for one request at a time per kind (what the HTTP handler
   awaits, without HTTP and JSON), p50 / p99, and `known (tower)`: a known user whose vector
   is not cached (the user tower runs, the cost before the cache); the floor under the HTTP
   figures.
3. HTTP, open loop: requests of each kind sent at a fixed rate for --seconds each whatever the
   answers, latency counted from each request's scheduled send time (no coordinated omission):
   p50 / p99 / errors, with the server's and the client's CPU per request; then closed loop
   with --concurrency (32) clients of known users for the saturation throughput.
4. Reload during load: at 200 requests/s, 1,000 new items go through the sensor's library path
   (ingest + clean the item file, embed only new items, upsert the index) into the artifacts
   the service watches; errors, p99 and seconds until the service answers with the new delta.

Goals (issue 22, reported, not asserted): on 2 cores, p99 < 5 ms at 500 requests/s for known
users, < 10 ms at 200/s for sessions and for `rank: true` over 100 candidates, saturation >=
3,000 requests/s for known users; zero errors during the reload; recall@10 >= 0.95 at >= 50x
exact search throughput.

The client runs in its own process (`client` subcommand) with --client-python, which needs
httpx and numpy only (pyproject's `bench` extra). Each level runs with two clients: httpx (the
client our users name) and `raw`, a minimal keep-alive HTTP/1.1 client on asyncio streams:
on 2 shared cores httpx spends several times the server's CPU per request and saturates
first, so the raw client shows what the service does; both are printed, with the server's and
the client's CPU per request beside each level.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))


def _log(message: str) -> None:
    print(f"[bench_serving] {message}", file=sys.stderr, flush=True)


# -- the load client (runs under --client-python: httpx + numpy only) ---------------------------


class RawPool:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams (`--client raw`): what a load
    generator costs when it does nothing but write requests and read Content-Length bodies,
    ~10x less CPU than httpx, for when the client and the server share 2 busy cores."""

    class Response:
        def __init__(self, status: int, body: bytes):
            self.status_code, self.content = status, body

        @property
        def text(self) -> str:
            return self.content.decode(errors="replace")

        def json(self):
            return json.loads(self.content)

    def __init__(self, url: str, size: int):
        import asyncio
        from urllib.parse import urlsplit

        u = urlsplit(url)
        self.host, self.port, self.size = u.hostname, u.port, size
        self.idle: list = []
        self.slots = asyncio.Semaphore(size)

    async def post(self, path: str, json: dict):
        import asyncio
        import json as _json

        body = _json.dumps(json).encode()
        request = b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
            path.encode(),
            self.host.encode(),
            len(body),
            body,
        )
        async with self.slots:
            reused = bool(self.idle)
            reader, writer = self.idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
            writer.write(request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionResetError):
                if not reused:
                    raise
                # the server closes keep-alive connections idle for 5 s (uvicorn): reconnect once
                writer.close()
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = int(
                next(
                    line.split(b":", 1)[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
            )
            data = await reader.readexactly(length)
            self.idle.append((reader, writer))
            return self.Response(status, data)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        for _, writer in self.idle:
            writer.close()


def _client(kind: str, url: str, size: int):
    import httpx

    if kind == "raw":
        return RawPool(url, size)
    return httpx.AsyncClient(
        base_url=url, limits=httpx.Limits(max_connections=size, max_keepalive_connections=size), timeout=10
    )


REQUEST_KINDS = ("known", "session", "rank")


def request_bodies(request: str, users: list[str], items: list[str], n: int, seed: int) -> list[dict]:
    """n seeded /recommend bodies of one kind: `known` (a random known user, k 10), `session`
    (no user id, three random indexed items as `recent_items`: the item-space mean) or `rank` (a
    random known user, `rank: true`: the service retrieves its rank candidates and the ranker
    orders them)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if request == "session":
        picks = rng.integers(0, len(items), (n, 3))
        return [{"k": 10, "recent_items": [items[j] for j in row]} for row in picks]
    extra = {"rank": True} if request == "rank" else {}
    return [{"user_id": users[j], "k": 10, **extra} for j in rng.integers(0, len(users), n)]


async def _open_loop(url: str, bodies: list[dict], rate: float, seconds: float, kind: str = "httpx") -> dict:
    """Send `rate` requests a second for `seconds`, each at its scheduled time whatever the
    answers (a dispatcher starts each request when it is due: thousands of sleeping tasks and a
    deep httpx pool queue cost the client more CPU than the server spends)."""
    import asyncio

    import httpx
    import numpy as np

    n = int(rate * seconds)
    lat, errors, statuses, deltas = [], [], {}, {}
    async with _client(kind, url, 64) as client:
        loop = asyncio.get_running_loop()

        async def one(i: int, due: float) -> None:
            try:
                r = await client.post("/recommend", json=bodies[i % len(bodies)])
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                else:
                    delta = r.json()["index"]["delta"]
                    deltas[delta] = deltas.get(delta, 0) + 1
            except (httpx.HTTPError, OSError, asyncio.IncompleteReadError) as e:
                errors.append(repr(e))
            lat.append(loop.time() - due)  # from the scheduled send: queueing in the client counts

        tasks = []
        start = loop.time() + 0.1
        t0 = time.perf_counter()
        for i in range(n):
            due = start + i / rate
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            tasks.append(asyncio.create_task(one(i, due)))
        # a server that falls behind must not stretch a level without bound: what is unanswered
        # 15 s after the last scheduled send counts as an error (timed out)
        _, pending = await asyncio.wait(tasks, timeout=15)
        for t in pending:
            t.cancel()
        wall = time.perf_counter() - t0
    if pending:
        errors += ["unanswered 15 s after the last send"] * len(pending)
    ms = np.array(lat) * 1000 if lat else np.zeros(1)
    return {
        "rate": rate,
        "n": n,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "errors": len(errors),
        "first_errors": errors[:3],
        "achieved": len(lat) / wall,
        "statuses": statuses,
        "deltas": deltas,
    }


async def _closed_loop(url: str, bodies: list[dict], concurrency: int, seconds: float, kind: str = "httpx") -> dict:
    import asyncio
    import itertools

    import numpy as np

    order = itertools.cycle(bodies)
    lat, errors = [], 0
    async with _client(kind, url, concurrency) as client:
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t = time.perf_counter()
                r = await client.post("/recommend", json=next(order))
                errors += r.status_code != 200
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {
        "concurrency": concurrency,
        "n": len(lat),
        "throughput": len(lat) / wall,
        "errors": errors,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def client_main(argv: list[str]) -> int:
    import asyncio

    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--users-file", type=Path, required=True)
    ap.add_argument("--items-file", type=Path, required=True)
    ap.add_argument("--request", default="known", choices=REQUEST_KINDS)
    ap.add_argument("--rate", type=float, default=0)
    ap.add_argument("--concurrency", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--client", default="httpx", choices=["httpx", "raw"])
    a = ap.parse_args(argv)
    users, items = a.users_file.read_text().split(), a.items_file.read_text().split()
    n = int(a.rate * a.seconds) if a.rate else 100_000
    bodies = request_bodies(a.request, users, items, n, a.seed)
    if a.rate:
        out = asyncio.run(_open_loop(a.url, bodies, a.rate, a.seconds, a.client))
    else:
        out = asyncio.run(_closed_loop(a.url, bodies, a.concurrency, a.seconds, a.client))
    print(json.dumps(out))
    return 0


# -- setup ---------------------------------------------------------------------------------------


def setup(source: Path, work: Path) -> None:
    """A serving home in `work` from the 1M-item `source` home (read only)."""
    import duckdb

    from models.index.embeddings import refresh_embeddings, refresh_index
    from models.index.item_index import IndexSpec
    from models.index.settings import IndexRefresh
    from models.retrieval.checkpoint import champion_version, load_checkpoint, update_manifest
    from models.retrieval.histories import write_user_histories
    from models.retrieval.inference import sample_users, user_vectors_of

    done = work / "setup.json"
    key = {"source": str(source), "champion": champion_version(source / "artifacts")}
    if done.exists() and json.loads(done.read_text()) == key:
        _log(f"reusing {work}")
        return
    shutil.rmtree(work, ignore_errors=True)
    (work / "artifacts" / "models").mkdir(parents=True)
    t0 = time.perf_counter()
    shutil.copy2(source / "warehouse.duckdb", work / "warehouse.duckdb")
    (work / "landing" / "items").mkdir(parents=True)
    for f in (source / "landing" / "items").iterdir():  # the ledger's files, read through links
        (work / "landing" / "items" / f.name).symlink_to(f)
    version = key["champion"]
    (work / "artifacts" / "models" / version).symlink_to(source / "artifacts" / "models" / version)
    update_manifest(work / "artifacts" / "models", latest=version, current=version)
    art = work / "artifacts"
    con = duckdb.connect(str(work / "warehouse.duckdb"))
    fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
    model, _, _ = load_checkpoint(art / "models" / version, expected_fingerprint=fingerprint)
    stats = refresh_embeddings(con, art / "embeddings", model, version, fingerprint, log=_log)
    _log(f"item_embeddings: {stats}")
    cfg = IndexRefresh()  # the graph's defaults
    _, stats = refresh_index(
        art / "index",
        art / "embeddings",
        IndexSpec(),
        rebuild_share=cfg.rebuild_share,
        tune_queries=lambda: user_vectors_of(con, model, sample_users(con, cfg.tune_sample, "tune")),
        tune_target=cfg.tune_target,
        log=_log,
    )
    _log(f"item_index: {stats}")
    write_user_histories(con, art / "user_histories")
    promote_untrained_ranker(con, art)
    con.close()
    _log(f"setup done in {time.perf_counter() - t0:.0f} s")
    done.write_text(json.dumps(key))


def promote_untrained_ranker(con, art: Path) -> None:
    """A ranker of the product's default size (ranker_config_for over the home's action
    vocabulary, the item snapshot its features are served from), seeded and untrained, promoted
    for `rank: true`: what a request costs does not depend on the weights, and training one at
    1M items (ranking_candidates over every user) is not what this benchmark measures."""
    import torch

    from models.artifacts import write_manifest
    from models.ranking.features import ItemTimeline
    from models.ranking.labels import describe, resolve_actions
    from models.ranking.model import Ranker, ranker_config_for
    from models.ranking.training import save_ranker

    actions = resolve_actions(con)
    vocab = [{"name": a.name, "weight": a.weight, "definition": describe(a)} for a in actions]
    n_items, n_users = con.execute(
        "SELECT count(DISTINCT item_id), count(DISTINCT user_id) FROM interaction_splits"
    ).fetchall()[0]
    torch.manual_seed(0)
    model = Ranker(ranker_config_for([a.weight for a in actions], n_items, n_users)).eval()
    root = art / "ranking"
    path = save_ranker(root, model, {"actions": vocab}, snapshot=ItemTimeline.from_warehouse(con).snapshot())
    write_manifest(root, {"current": path.name, "latest": path.name, "versions": [path.name]})
    _log(f"ranking: untrained default-size ranker {path.name} promoted for rank: true")


# -- figures -------------------------------------------------------------------------------------


def autotune_figures(work: Path, threads: int) -> dict:
    import duckdb
    import faiss
    import numpy as np

    from models.index.embeddings import read_embeddings
    from models.index.item_index import ItemIndex, exact_search, recall_at_k
    from models.index.settings import IndexRefresh
    from models.retrieval.checkpoint import champion_version, load_checkpoint
    from models.retrieval.inference import sample_users, user_vectors_of

    art = work / "artifacts"
    cfg = IndexRefresh()
    con = duckdb.connect(str(work / "warehouse.duckdb"), read_only=True)
    model, _, _ = load_checkpoint(art / "models" / champion_version(art))
    xq = user_vectors_of(con, model, sample_users(con, cfg.recall_sample))  # the recall check's users
    con.close()
    rows, _, xb = read_embeddings(art / "embeddings", items=False)
    _, I0 = exact_search(xb, rows, xq, 10)
    index = ItemIndex.load(art / "index")
    faiss.omp_set_num_threads(threads)
    flat = faiss.IndexFlatIP(xb.shape[1])
    flat.add(xb)

    def per_query_ms(search, n=200) -> float:
        t = []
        for q in xq[:n]:
            t0 = time.perf_counter()
            search(q[None, :])
            t.append(time.perf_counter() - t0)
        return 1000 * float(np.median(t))

    exact_ms = per_query_ms(lambda q: flat.search(q, 10), n=50)
    chosen = index.manifest["search"]
    out = {
        "chosen": chosen["setting"],
        "tuned_on": chosen["queries"],
        "tune_recall": chosen["recall_at_10"],
        "points": chosen["points"],
        "exact_ms": exact_ms,
        "rows": [],
    }
    for setting in [chosen["setting"], "nprobe=32"]:
        index.set_search(setting)
        _, I = index.search(xq, 10)
        ms = per_query_ms(lambda q: index.search(q, 10))
        out["rows"].append({"setting": setting, "recall": recall_at_k(I, I0, 10), "ms": ms, "speedup": exact_ms / ms})
    return out


def in_process_figures(work: Path, users: list[str], items: list[str], rank_candidates: int, n: int = 1000) -> dict:
    """Per kind of request, one request per call of `Service.answer` (the batch entry the HTTP
    handler awaits, ranking included; no HTTP, no JSON): p50 / p99 ms. `known (tower)` is a
    known user whose vector is not cached yet (the user tower runs): the cost before the cache."""
    import faiss
    import numpy as np
    import torch

    from models.serving.ranker import promoted_ranker
    from models.serving.service import Service
    from models.serving.snapshot import load_snapshot

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    t0 = time.perf_counter()
    snap = load_snapshot(work / "artifacts", ranker_hook=promoted_ranker)
    load_s = time.perf_counter() - t0
    snap.core.user_cache.filled[:] = False  # load_snapshot computed them: time it again here
    t0 = time.perf_counter()
    warmed = snap.core.warm_user_vectors()
    warm_s = time.perf_counter() - t0
    service = Service()
    service.snapshot = snap
    out = {"load_s": load_s, "warm_s": warm_s, "warmed": warmed, "kinds": {}}

    def timed(jobs, before=None) -> dict:
        lat = []
        for job in jobs:
            if before:
                before()
            t = time.perf_counter()
            service.answer([job])
            lat.append(time.perf_counter() - t)
        ms = np.array(lat[len(lat) // 10 :]) * 1000  # the first calls warm caches
        return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}

    def forget_users():
        snap.core.user_cache.filled[:] = False

    for request in REQUEST_KINDS:
        bodies = request_bodies(request, users, items, n, seed=1)
        if request == "rank":
            if snap.ranker is None:
                continue
            bodies = [{**b, "k": max(10, rank_candidates), "rank_k": 10} for b in bodies]  # what app.py sends
        out["kinds"][request] = timed([("recommend", b) for b in bodies])
        if request == "known":
            out["kinds"]["known (tower)"] = timed([("recommend", b) for b in bodies[: n // 2]], before=forget_users)
            snap.core.warm_user_vectors()
    batch = [("recommend", b) for b in request_bodies("known", users, items, 64, seed=2)]
    t = time.perf_counter()
    for _ in range(20):
        service.answer(batch)
    out["batch64_ms_per_request"] = (time.perf_counter() - t) / (20 * 64) * 1000
    return out


def add_items(work: Path, n: int = 1000) -> float:
    """n new items through the sensor's library path (ingest + clean the item file, embed the new
    items only, upsert the index) into the artifacts the service watches; returns seconds."""
    import duckdb

    from models.clean.cleaning import clean_items
    from models.clean.rules import CleaningRules
    from models.index.embeddings import refresh_embeddings, refresh_index
    from models.index.item_index import IndexSpec
    from models.ingest.landing import ITEMS, ingest_folder
    from models.retrieval.checkpoint import champion_version, load_checkpoint

    t0 = time.perf_counter()
    art = work / "artifacts"
    con = duckdb.connect(str(work / "warehouse.duckdb"))
    items = (
        con.execute(
            "SELECT title, array_to_string(categories, '|') AS categories FROM clean_items "
            "USING SAMPLE 2000 ROWS (reservoir, 7)"
        )
        .df()
        .head(n)
    )
    stamp = time.strftime("%Y%m%dT%H%M%S")
    items.insert(0, "item_id", [f"new-{stamp}-{i:05d}" for i in range(len(items))])
    items["created_at"] = "2026-12-01T00:00:00Z"
    items.to_csv(work / "landing" / "items" / f"new-{stamp}.csv", index=False)
    ingest_folder(con, work / "landing", ITEMS, log=lambda m: None)
    clean_items(con, CleaningRules().sql_params())
    fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
    version = champion_version(art)
    model, _, _ = load_checkpoint(art / "models" / version, expected_fingerprint=fingerprint)
    refresh_embeddings(con, art / "embeddings", model, version, fingerprint)
    con.close()
    refresh_index(art / "index", art / "embeddings", IndexSpec())  # the graph's defaults
    return time.perf_counter() - t0


def start_server(
    work: Path, port: int, max_wait_ms: float, log_path: Path, rank_candidates: int, extra: tuple[str, ...] = ()
) -> subprocess.Popen:
    env = {**os.environ, "TOWERFLOW_HOME": str(work), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("TOWERFLOW_API_TOKEN", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestration.cli",
            "serve",
            "--port",
            str(port),
            "--max-wait-ms",
            str(max_wait_ms),
            "--rank-candidates",
            str(rank_candidates),
            *extra,
        ],
        env=env,
        cwd=ROOT,
        stdout=open(log_path, "w"),
        stderr=subprocess.STDOUT,
    )
    import urllib.request

    deadline = time.time() + 600
    while time.time() < deadline:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(log_path.read_text()[-3000:])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_client(
    py: str,
    url: str,
    users_file: Path,
    seconds: float,
    rate: float = 0,
    concurrency: int = 0,
    seed: int = 0,
    kind: str = "httpx",
    request: str = "known",
) -> subprocess.Popen:
    return subprocess.Popen(
        [
            py,
            __file__,
            "client",
            "--url",
            url,
            "--users-file",
            str(users_file),
            "--items-file",
            str(users_file.with_name("items.txt")),
            "--request",
            request,
            "--rate",
            str(rate),
            "--concurrency",
            str(concurrency),
            "--seconds",
            str(seconds),
            "--seed",
            str(seed),
            "--client",
            kind,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        return client_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source-home", type=Path, default=Path("/work/scale/run1/home"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/towerflow-bench-serving"))
    ap.add_argument(
        "--levels",
        default="known:50,200,500;session:200;rank:200",
        help="open-loop levels, kind:rate[,rate]; ... (kinds: known, session, rank)",
    )
    ap.add_argument("--rank-candidates", type=int, default=100, help="the service's --rank-candidates")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--reload-rate", type=float, default=200)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=1, help="FAISS threads for the exact baseline")
    ap.add_argument("--port", type=int, default=8791)
    ap.add_argument("--client-python", default=sys.executable, help="a Python with httpx and numpy")
    ap.add_argument(
        "--clients",
        default="httpx,raw",
        help="load clients, each runs every level: httpx (the "
        "issue's) and raw (asyncio streams, ~10x less client CPU on a shared 2-core machine)",
    )
    ap.add_argument("--skip", default="", help="comma list of steps to skip: autotune,inprocess,load,reload")
    ap.add_argument(
        "--serve-args",
        default="",
        help="more `towerflow serve` options, space separated (e.g. --no-event-log: without the impression log's fsync)",
    )
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))

    import duckdb

    setup(args.source_home, args.work)
    con = duckdb.connect(str(args.work / "warehouse.duckdb"), read_only=True)
    users = [r[0] for r in con.execute("SELECT DISTINCT user_id FROM interaction_splits").fetchall()]
    items = [r[0] for r in con.execute("SELECT item_id FROM clean_items ORDER BY item_id").fetchall()]
    users_file = args.work / "users.txt"
    users_file.write_text("\n".join(users))
    users_file.with_name("items.txt").write_text("\n".join(items))
    con.close()
    print(
        f"bench_serving: {args.source_home} ({len(users):,} known users), load {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores at start"
    )

    if "autotune" not in skip:
        a = autotune_figures(args.work, args.threads)
        print(
            f"\n1. index autotune: chose {a['chosen']} (recall@10 {a['tune_recall']:.4f} on {a['tuned_on']:,} tuning "
            f"users); explored: " + ", ".join(f"{p['setting']} {p['recall_at_10']:.3f}" for p in a["points"])
        )
        print(f"{'setting':<12} {'recall@10 (check users)':>24} {'ms/query':>9} {'exact ms/query':>15} {'speed-up':>9}")
        for r in a["rows"]:
            print(
                f"{r['setting']:<12} {r['recall']:>24.4f} {r['ms']:>9.3f} {a['exact_ms']:>15.2f} {r['speedup']:>8.0f}x"
            )

    levels = [
        (request, float(rate))
        for part in args.levels.split(";")
        for request, rates in [part.split(":")]
        for rate in rates.split(",")
    ]
    inproc: dict = {}
    if "inprocess" not in skip:
        p = in_process_figures(args.work, users, items, args.rank_candidates)
        inproc = p["kinds"]
        print(
            f"\n2. in process (Service.answer, one request per call, no HTTP): load {p['load_s']:.1f} s, "
            f"{p['warmed']:,} known users' vectors computed in {p['warm_s']:.1f} s; batches of 64 known users: "
            f"{p['batch64_ms_per_request']:.3f} ms per request"
        )
        print(f"{'request':<14} {'p50 ms':>7} {'p99 ms':>7}")
        for request, r in inproc.items():
            print(f"{request:<14} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f}", flush=True)

    url = f"http://127.0.0.1:{args.port}"
    log_path = args.work / "serve.log"
    t0 = time.perf_counter()
    server = start_server(
        args.work, args.port, args.max_wait_ms, log_path, args.rank_candidates, tuple(args.serve_args.split())
    )
    print(f"\nserver ready in {time.perf_counter() - t0:.1f} s (max wait {args.max_wait_ms} ms)", flush=True)
    clients_before = sum(os.times()[2:4])
    try:
        if "load" not in skip:
            print(f"\n3. HTTP open loop, {args.seconds:.0f} s per level (latency from the scheduled send time)")
            print(
                f"{'request':<8} {'client':>6} {'offered/s':>9} {'achieved/s':>10} {'requests':>8} {'p50 ms':>7} "
                f"{'p99 ms':>7} {'max ms':>7} {'errors':>6} {'in-process p99':>14} {'server CPU ms/req':>17} "
                f"{'client CPU ms/req':>17}"
            )
            for kind, (request, rate) in [(k, lv) for k in args.clients.split(",") for lv in levels]:
                s0 = cpu_seconds(server.pid)
                proc = run_client(
                    args.client_python, url, users_file, args.seconds, rate=rate, kind=kind, request=request
                )
                out = proc.communicate()[0]
                client_cpu = sum(os.times()[2:4])  # children's user + system: the client processes so far
                r = json.loads(out)
                server_ms = (cpu_seconds(server.pid) - s0) / max(1, r["n"]) * 1000
                client_ms = (client_cpu - clients_before) / max(1, r["n"]) * 1000
                clients_before = client_cpu
                ip = f"{inproc[request]['p99_ms']:.2f}" if request in inproc else "-"
                print(
                    f"{request:<8} {kind:>6} {rate:>9.0f} {r['achieved']:>10.1f} {r['n']:>8} {r['p50_ms']:>7.2f} "
                    f"{r['p99_ms']:>7.2f} {r['max_ms']:>7.1f} {r['errors']:>6} {ip:>14} {server_ms:>17.2f} "
                    f"{client_ms:>17.2f}" + (f"  {r['first_errors']}" if r["errors"] else ""),
                    flush=True,
                )
            for kind in args.clients.split(","):
                proc = run_client(args.client_python, url, users_file, 10, concurrency=args.concurrency, kind=kind)
                r = json.loads(proc.communicate()[0])
                print(
                    f"saturation (known users, {kind}, closed loop, {args.concurrency} concurrent, 10 s): "
                    f"{r['throughput']:.0f} requests/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                    f"errors {r['errors']}",
                    flush=True,
                )
        if "reload" not in skip:
            import urllib.request

            def delta() -> str:
                with urllib.request.urlopen(f"{url}/readyz", timeout=5) as resp:
                    return json.loads(resp.read())["index"]["delta"]

            before = delta()
            kind = args.clients.split(",")[-1]
            proc = run_client(
                args.client_python, url, users_file, args.seconds, rate=args.reload_rate, seed=5, kind=kind
            )
            time.sleep(min(5.0, args.seconds / 4))
            t_add = time.perf_counter()
            publish_s = add_items(args.work)
            while delta() == before and time.perf_counter() - t_add < 120:
                time.sleep(0.1)
            served_s = time.perf_counter() - t_add
            r = json.loads(proc.communicate()[0])
            print(
                f"\n4. reload during load ({kind} client, {args.reload_rate:.0f} requests/s for {args.seconds:.0f} s): 1,000 new items "
                f"published in {publish_s:.1f} s, served {served_s:.1f} s after the update started; "
                f"requests {r['n']}, errors {r['errors']}, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                f"max {r['max_ms']:.1f} ms; answers by index delta: {r['deltas']}"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\nload {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end (other engineers' jobs share them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
