"""The online recommendation service: an ASGI app (FastAPI) that `towerflow serve` runs on uvicorn.

    POST /recommend  {"user_id", "k": 10, "exclude": [], "recent_items": [], "rank": false}
    POST /similar    {"item_id", "k": 10}
    GET  /healthz    the process is up (never needs the token)
    GET  /readyz     a consistent snapshot (model + index + features + histories) is loaded
    GET  /metrics    Prometheus text: requests by path and status, latency histograms, batch
                     sizes, index size, model version, reloads and the last reload time

- **Micro-batching** (`MicroBatcher`): concurrent requests queue; up to `max_batch` of them,
  the first waiting at most `max_wait_ms` for more, are answered with one user-tower forward
  and one FAISS search. Torch and FAISS run on one thread: a single request is too small to
  split.
- **Live reload** (`Reloader`): a thread polls the four manifests (models, index, embeddings,
  user_histories) every `reload_seconds`; when what they name changes, it loads a new
  snapshot in the background (reusing what did not change) and swaps it in with one reference
  assignment. Each batch reads the reference once, so requests in flight finish on the
  snapshot they started with. A snapshot that does not load or does not fit together is
  refused: logged, counted in /metrics, the old one keeps serving, and it is retried only once
  the manifests change again (or after `retry_seconds`).
- **Errors**: every 4xx is JSON {"error", "field"}: malformed JSON (400), unknown fields,
  wrong types, k outside 1..1000, ids longer than the id limit, more than 1,000 recent or
  excluded items (422), bodies over 1 MB (413), an unknown item in /similar (404), `rank: true`
  while no ranker is promoted (409), a missing or wrong token (401).
- **Auth**: when a token is configured (TOWERFLOW_API_TOKEN), every endpoint but /healthz needs
  `Authorization: Bearer <token>`.
"""

import asyncio
import hmac
import json
import logging
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.artifacts import SERVED
from models.serving.config import ServeConfig
from models.serving.snapshot import RequestError, Snapshot, SnapshotError, identity, load_snapshot

log = logging.getLogger("towerflow.serve")

MAX_BODY = 1 << 20  # 1 MB
MAX_LIST = 1000  # recent_items / exclude entries
MAX_K = 1000


def promoted_ranker(artifacts: Path):
    """The ranking stage `rank: true` runs (models/ranking's promoted ranker), or None while no
    ranker is promoted (the service then answers 409 "no ranker is promoted"). Called whenever a
    snapshot loads; the ranker's manifest is among the ones the reloader watches, so a newly
    promoted ranker is served after the next reload."""
    from models.ranking.ranker import load_ranker

    ranker = load_ranker(artifacts)
    return None if ranker is None else ServiceRanker(ranker)


class ServiceRanker:
    """The promoted ranker over what the service knows: the user's history from the
    user_histories artifact (latest last) plus the request's recent items, and the retrieved
    candidates with their retrieval scores. The service holds no action log, so history items
    enter the ranker as positives with no specific action (mask 0); batch ranking
    (ranked_recommendations) reads each item's actions from the warehouse and can differ."""

    def __init__(self, ranker):
        self.ranker = ranker
        self.version = ranker.version

    def rank(
        self, user_id: str | None, history: list[str], candidates: list[str], retrieval_scores: list[float]
    ) -> list[tuple[str, float]]:
        result = self.ranker.rank(user_id or "", history, [0] * len(history), candidates, retrieval_scores)
        return list(zip(result.item_ids, result.score.tolist()))


def request_models(max_id_length: int):
    """The request bodies, strict (no type coercion, no unknown fields), ids bounded."""
    Id = Annotated[str, Field(min_length=1, max_length=max_id_length)]

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        user_id: Id | None = None
        k: int = Field(default=10, ge=1, le=MAX_K)
        exclude: list[Id] = Field(default_factory=list, max_length=MAX_LIST)
        recent_items: list[Id] = Field(default_factory=list, max_length=MAX_LIST)
        rank: bool = False

    class SimilarRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        item_id: Id
        k: int = Field(default=10, ge=1, le=MAX_K)

    return RecommendRequest, SimilarRequest


# -- metrics (Prometheus text exposition, version 0.0.4) -----------------------------------------

BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    def __init__(self, buckets):
        self.buckets, self.counts, self.sum, self.n = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, v: float) -> None:
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
                break
        self.sum += v
        self.n += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        out, acc = [], 0
        sep = "," if labels else ""
        for b, c in zip(self.buckets, self.counts):
            acc += c
            out.append(f'{name}_bucket{{{labels}{sep}le="{b}"}} {acc}')
        out += [
            f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}',
            f"{name}_sum{{{labels}}} {self.sum:.6f}",
            f"{name}_count{{{labels}}} {self.n}",
        ]
        return out


class Metrics:
    def __init__(self):
        self.requests = defaultdict(int)  # (path, status) -> n
        self.latency = defaultdict(lambda: Histogram(BUCKETS))  # path -> seconds
        self.batch = Histogram(BATCH_BUCKETS)
        self.reloads = defaultdict(int)  # outcome -> n
        self.last_reload = 0.0
        self.lock = threading.Lock()

    def text(self, snap: Snapshot | None) -> str:
        with self.lock:
            lines = [
                "# HELP towerflow_requests_total HTTP requests by path and status.",
                "# TYPE towerflow_requests_total counter",
            ]
            lines += [
                f'towerflow_requests_total{{path="{p}",status="{s}"}} {n}'
                for (p, s), n in sorted(self.requests.items())
            ]
            lines += [
                "# HELP towerflow_request_seconds Request latency (first byte of the response) by path.",
                "# TYPE towerflow_request_seconds histogram",
            ]
            for p, h in sorted(self.latency.items()):
                lines += h.lines("towerflow_request_seconds", f'path="{p}"')
            lines += [
                "# HELP towerflow_batch_size Requests answered by one forward and search.",
                "# TYPE towerflow_batch_size histogram",
                *self.batch.lines("towerflow_batch_size"),
            ]
            lines += [
                "# HELP towerflow_reloads_total Snapshot loads by outcome (loaded, refused).",
                "# TYPE towerflow_reloads_total counter",
            ]
            lines += [f'towerflow_reloads_total{{outcome="{o}"}} {n}' for o, n in sorted(self.reloads.items())]
            lines += [
                "# HELP towerflow_last_reload_timestamp_seconds When the serving snapshot was swapped in.",
                "# TYPE towerflow_last_reload_timestamp_seconds gauge",
                f"towerflow_last_reload_timestamp_seconds {self.last_reload:.3f}",
            ]
        lines += [
            "# HELP towerflow_ready 1 when a consistent snapshot is serving.",
            "# TYPE towerflow_ready gauge",
            f"towerflow_ready {int(snap is not None)}",
        ]
        if snap is not None:
            info = snap.index_info
            lines += [
                "# HELP towerflow_index_items Live items in the served index.",
                "# TYPE towerflow_index_items gauge",
                f"towerflow_index_items {info['items']}",
                "# HELP towerflow_model_info The served model version and index build (value 1).",
                "# TYPE towerflow_model_info gauge",
                f'towerflow_model_info{{model_version="{snap.version}",index_build="{info["build"]}",'
                f'index_delta="{info["delta"]}",search="{info["search"]}"}} 1',
                "# HELP towerflow_known_users Users the served histories know.",
                "# TYPE towerflow_known_users gauge",
                f"towerflow_known_users {len(snap.histories)}",
            ]
        return "\n".join(lines) + "\n"


# -- the service --------------------------------------------------------------------------------


class Service:
    """Holds the current snapshot and swaps it; answers batches from whichever is current."""

    def __init__(self, artifacts: Path, config: ServeConfig, ranker_hook=promoted_ranker):
        self.artifacts, self.config, self.ranker_hook = Path(artifacts), config, ranker_hook
        self.snapshot: Snapshot | None = None
        self.not_ready = "loading"
        self.metrics = Metrics()
        self._refused: tuple[dict, float] | None = None  # identity last refused, when
        self._lock = threading.Lock()  # one load at a time

    def reload(self) -> bool:
        """Load and swap in a new snapshot if the manifests name other artifacts; True if swapped."""
        with self._lock:
            current = self.snapshot
            try:
                ident = identity(self.artifacts)
            except (OSError, ValueError) as e:  # a manifest unreadable right now
                ident = {"error": str(e)}
            if current is not None and ident == current.ident:
                return False
            if (
                self._refused
                and self._refused[0] == ident
                and time.time() - self._refused[1] < self.config.retry_seconds
            ):
                return False
            t0 = time.perf_counter()
            try:
                snap = load_snapshot(self.artifacts, previous=current, ranker_hook=self.ranker_hook)
            except SnapshotError as e:
                self._refused = (ident, time.time())
                with self.metrics.lock:
                    self.metrics.reloads["refused"] += 1
                if current is None:
                    self.not_ready = str(e)
                log.error(
                    "towerflow serve: refused new artifacts, %s: %s",
                    "still not ready"
                    if current is None
                    else f"still serving model {current.version} index {current.ident['index_delta']}",
                    e,
                )
                return False
            self.snapshot = snap  # the swap: batches already running keep their reference
            self._refused = None
            with self.metrics.lock:
                self.metrics.reloads["loaded"] += 1
                self.metrics.last_reload = time.time()
            info = snap.index_info
            log.info(
                "towerflow serve: serving model %s, index %s/%s (%s, %s items, search %s), %s known users "
                "(loaded in %.2f s)",
                snap.version,
                info["build"],
                info["delta"],
                info["type"],
                f"{info['items']:,}",
                info["search"] or "-",
                f"{len(snap.histories):,}",
                time.perf_counter() - t0,
            )
            return True

    def answer(self, jobs: list[tuple[str, dict]]) -> list:
        """Worker-thread entry: (kind, request) jobs -> results (dicts or RequestError), one snapshot."""
        snap = self.snapshot
        if snap is None:
            return [RequestError(f"not ready: {self.not_ready}", "", 503)] * len(jobs)
        with self.metrics.lock:
            self.metrics.batch.observe(len(jobs))
        out: list = [None] * len(jobs)
        for kind, fn in (("recommend", snap.recommend), ("similar", snap.similar)):
            idx = [n for n, (k, _) in enumerate(jobs) if k == kind]
            if idx:
                for n, r in zip(idx, fn([jobs[n][1] for n in idx])):
                    out[n] = r
        for n, (kind, req) in enumerate(jobs):
            if kind == "recommend" and req.get("rank") and isinstance(out[n], dict):
                out[n] = self._rank(snap, req, out[n])
        meta = {"model_version": snap.version, "index": snap.index_info}
        return [r if isinstance(r, RequestError) else {**r, **meta} for r in out]

    @staticmethod
    def _rank(snap: Snapshot, req: dict, res: dict):
        history = snap.history_items(req.get("user_id")) + list(req.get("recent_items") or [])
        ranked = snap.ranker.rank(
            req.get("user_id"), history, [i["item_id"] for i in res["items"]], [i["score"] for i in res["items"]]
        )
        return {
            **res,
            "ranked": True,
            "items": [{"item_id": i, "score": float(s)} for i, s in ranked][: req.get("rank_k", req["k"])],
        }


class MicroBatcher:
    """Coalesces concurrent jobs into batches, one batch at a time.

    The first job of a batch waits at most `max_wait_ms` for company (0: only what is already
    queued), then up to `max_batch` queued jobs are answered together. By default the answer
    runs on the event loop's own thread: handing each batch to a worker thread costs two thread
    wake-ups, which on a busy 2-core machine cost more than the batch itself (a sequential
    client saw 18 ms per request through a worker thread, 3-5 ms in process). While a batch
    runs, new requests wait in the sockets and form the next batch, so batches grow with load
    by themselves. `worker_thread=True` answers on one worker thread instead, leaving the loop
    free to parse requests meanwhile (more throughput where cores are idle).
    """

    def __init__(self, answer, max_batch: int, max_wait_ms: float, threads: int = 1, worker_thread: bool = False):
        self.answer, self.max_batch, self.max_wait = answer, max(1, max_batch), max(0.0, max_wait_ms) / 1000
        self.threads = threads
        self.queue: asyncio.Queue | None = None
        self.executor = (
            ThreadPoolExecutor(1, thread_name_prefix="towerflow-batch", initializer=self._init_thread)
            if worker_thread
            else None
        )
        self.task: asyncio.Task | None = None

    def _init_thread(self) -> None:
        import faiss
        import torch

        torch.set_num_threads(self.threads)
        faiss.omp_set_num_threads(self.threads)

    async def submit(self, kind: str, request: dict):
        fut = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((kind, request, fut))
        return await fut

    def start(self) -> None:
        if self.executor is None:
            self._init_thread()
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            if self.max_wait > 0 and self.queue.qsize() < self.max_batch - 1:
                await asyncio.sleep(self.max_wait)  # company for the first job, at most this long
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            jobs = [(k, r) for k, r, _ in batch]
            try:
                results = (
                    self.answer(jobs)
                    if self.executor is None
                    else await loop.run_in_executor(self.executor, self.answer, jobs)
                )
            except Exception as e:  # noqa: BLE001 - raised in every waiting request, logged there
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, _, fut), res in zip(batch, results):  # answers, or RequestErrors to reply with
                if not fut.done():
                    fut.set_result(res)


class Reloader(threading.Thread):
    """Polls the manifests and reloads the service's snapshot when they change."""

    def __init__(self, service: Service, seconds: float):
        super().__init__(name="towerflow-reload", daemon=True)
        self.service, self.seconds, self.stopped = service, seconds, threading.Event()

    def _stamp(self) -> tuple:
        a = self.service.artifacts
        out = []
        for sub in SERVED:
            try:
                st = os.stat(a / sub / "manifest.json")
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def run(self) -> None:
        last = None
        while not self.stopped.wait(self.seconds):
            stamp = self._stamp()
            refused = self.service._refused
            retry = refused is not None and time.time() - refused[1] >= self.service.config.retry_seconds
            if stamp != last or retry:
                try:
                    self.service.reload()
                except Exception:  # noqa: BLE001 - a reload bug must not stop the watcher; logged
                    log.exception("towerflow serve: reload failed; still serving the previous snapshot")
                last = stamp


# -- ASGI ---------------------------------------------------------------------------------------


def _json(status: int, body: dict, headers: dict | None = None) -> tuple[int, bytes, list]:
    h = [(b"content-type", b"application/json")] + [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return status, json.dumps(body).encode(), h


class Gate:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): bearer token, body size limit,
    request counts and latency."""

    def __init__(self, app, service: Service):
        self.app, self.service = app, service
        token = service.config.token
        self.expected = f"Bearer {token}".encode() if token else None

    async def _send_json(self, send, status, body, headers=None):
        status, payload, h = _json(status, body, headers)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": h + [(b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        path = scope["path"]
        status_seen = [500]

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status_seen[0] = message["status"]
            await send(message)

        try:
            headers = dict(scope["headers"])
            if (
                self.expected is not None
                and path != "/healthz"
                and not hmac.compare_digest(headers.get(b"authorization", b""), self.expected)
            ):
                return await self._send_json(
                    send_counted,
                    401,
                    {"error": "missing or wrong bearer token", "field": "Authorization"},
                    {"www-authenticate": "Bearer"},
                )
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
                return await self._send_json(
                    send_counted, 413, {"error": f"request body over {MAX_BODY:,} bytes", "field": "body"}
                )
            if scope["method"] == "POST":  # read the body here (bounded, also when chunked), then replay it
                body, more = b"", True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > MAX_BODY:
                        return await self._send_json(
                            send_counted, 413, {"error": f"request body over {MAX_BODY:,} bytes", "field": "body"}
                        )
                sent = False

                async def replay():
                    nonlocal sent
                    if sent:
                        return await receive()
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}

                return await self.app(scope, replay, send_counted)
            return await self.app(scope, receive, send_counted)
        finally:
            known = path if path in ("/recommend", "/similar", "/healthz", "/readyz", "/metrics") else "other"
            m = self.service.metrics
            with m.lock:
                m.requests[(known, status_seen[0])] += 1
                m.latency[known].observe(time.perf_counter() - t0)


def _field(loc) -> str:
    return ".".join(str(p) for p in loc) or "body"


def _invalid(exc: ValidationError) -> JSONResponse:
    """400 for a body that is not JSON, 422 for JSON that is not a valid request; names the field."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = _field(first.get("loc", ()))
    detail = [
        {"field": _field(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type", "")} for e in errors
    ]
    return JSONResponse(
        {"error": f"{field}: {first['msg']}", "field": field, "errors": detail},
        status_code=400 if first["type"] == "json_invalid" else 422,
    )


def create_app(artifacts: Path, config: ServeConfig, ranker_hook=promoted_ranker) -> FastAPI:
    """The ASGI app over the artifacts folder; loads its first snapshot when it starts."""
    service = Service(artifacts, config, ranker_hook)
    batcher = MicroBatcher(service.answer, config.max_batch, config.max_wait_ms, config.threads, config.worker_thread)
    reloader = Reloader(service, config.reload_seconds)
    RecommendRequest, SimilarRequest = request_models(config.max_id_length)

    async def lifespan(app):
        batcher.start()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, service.reload)  # the first load; /healthz answers meanwhile
        reloader.start()
        yield
        reloader.stopped.set()
        await batcher.stop()

    app = FastAPI(title="towerflow", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.exception_handler(404)
    async def not_found(request: Request, exc):
        return JSONResponse({"error": f"no endpoint {request.url.path}", "field": "path"}, status_code=404)

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc):
        return JSONResponse(
            {"error": f"{request.method} is not allowed on {request.url.path}", "field": "method"}, status_code=405
        )

    def _reply(result):
        if isinstance(result, RequestError):
            return JSONResponse({"error": str(result), "field": result.field}, status_code=result.status)
        return JSONResponse(result)

    async def _submit(kind: str, request: dict):
        try:
            return _reply(await batcher.submit(kind, request))
        except Exception:  # noqa: BLE001 - a bug answers a JSON 500 without a traceback; logged here
            log.exception("towerflow serve: %s failed", kind)
            return JSONResponse({"error": "internal error (logged by the service)", "field": ""}, status_code=500)

    # bodies are parsed as JSON whatever the content type (`curl -d` sends a form type) and
    # validated by pydantic-core directly
    @app.post("/recommend")
    async def recommend(request: Request):
        try:
            body = RecommendRequest.model_validate_json(await request.body())
        except ValidationError as e:
            return _invalid(e)
        if body.rank:
            snap = service.snapshot
            if snap is None or snap.ranker is None:
                return JSONResponse({"error": "no ranker is promoted", "field": "rank"}, status_code=409)
        req = body.model_dump()
        if body.rank:  # the ranker re-orders a wider candidate set; k is cut after ranking
            req.update(k=max(body.k, config.rank_candidates), rank_k=body.k)
        return await _submit("recommend", req)

    @app.post("/similar")
    async def similar(request: Request):
        try:
            body = SimilarRequest.model_validate_json(await request.body())
        except ValidationError as e:
            return _invalid(e)
        return await _submit("similar", body.model_dump())

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        snap = service.snapshot
        if snap is None:
            return JSONResponse({"status": "not ready", "reason": service.not_ready}, status_code=503)
        return {
            "status": "ready",
            "model_version": snap.version,
            "index": snap.index_info,
            "known_users": len(snap.histories),
            "loaded_at": snap.loaded_at,
        }

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(service.metrics.text(service.snapshot), media_type="text/plain; version=0.0.4")

    app.add_middleware(Gate, service=service)
    return app
