"""The online recommendation service: an ASGI app (FastAPI) that `towerflow serve` runs on uvicorn.

    POST /recommend  {"user_id", "k": 10, "exclude": [], "recent_items": [], "rank": false}
    POST /similar    {"item_id", "k": 10}
    POST /feedback   {"request_id", "item_id", "action", "timestamp"?}: what the user did with an
                     item of a /recommend answer (click, like, not_interested, ...)
    GET  /healthz    the process is up (never needs the token)
    GET  /readyz     a consistent snapshot (model + index + features + histories) is loaded
    GET  /metrics    Prometheus text: requests by path and status, latency histograms, batch
                     sizes, index size, model version, reloads and the last reload time
    GET  /openapi.json  the OpenAPI schema of the above, request bodies included

This module only wires the parts together, one concern each:

- models/serving/requests.py: the request bodies and the JSON 400/422 naming the field;
- models/serving/middleware.py: bearer token (TOWERFLOW_API_TOKEN), 1 MB body limit (413),
  request counts and latency;
- models/serving/batching.py: micro-batching (one user-tower forward and one FAISS search per
  batch);
- models/serving/service.py: the snapshots being served (champion, challenger) and the batched answers;
- models/serving/arms.py: which arm answers a user (split or shadow), publishing a challenger;
- models/serving/feedback.py, eventlog.py: impressions and feedback as landing events, fsynced;
- models/serving/reload.py: live reload by manifest, atomic swap, refusal of inconsistent sets;
- models/serving/metrics.py: Prometheus metrics through prometheus_client, a registry per app;
- models/serving/ranker.py: the promoted ranker `rank: true` runs.

Every 4xx is JSON {"error", "field"}: malformed JSON (400), unknown fields, wrong types, k
outside 1..1000, ids longer than the id limit, more than 1,000 recent or excluded items (422),
bodies over 1 MB (413), an unknown item in /similar (404), `rank: true` while no ranker is
promoted (409), a missing or wrong token (401), feedback on a request id the service does not
remember (404, "request_id") or on an item that answer did not hold (422, "item_id"), an action
the cleaning does not know (422, "action"), feedback while no event log is configured (409).

Every /recommend answer names its `arm`, `model_version` and `request_id`; /similar answers
come from the champion.
"""

import asyncio
import logging
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from models.serving.batching import MicroBatcher
from models.serving.config import ServeConfig
from models.serving.middleware import Gate
from models.serving.ranker import promoted_ranker
from models.serving.reload import Reloader
from models.serving.requests import invalid_request, openapi_body, request_models
from models.serving.feedback import feedback_line, now_ms
from models.serving.service import DURABLE, Service
from models.serving.snapshot import RequestError

log = logging.getLogger("towerflow.serve")


def create_app(artifacts: Path, config: ServeConfig, ranker_hook=promoted_ranker) -> FastAPI:
    """The ASGI app over the artifacts folder; loads its first snapshot when it starts."""
    service = Service(config)
    batcher = MicroBatcher(service.answer, config.max_batch, config.max_wait_ms, config.threads, config.worker_thread)
    reloader = Reloader(service, artifacts, config, ranker_hook)
    RecommendRequest, SimilarRequest, FeedbackRequest = request_models(config.max_id_length, config.feedback_actions)

    async def lifespan(app):
        service.start()  # hands over the event-log files a killed process left
        batcher.start()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, reloader.reload)  # the first load; /healthz answers meanwhile
        reloader.start()
        yield
        reloader.stopped.set()
        await batcher.stop()
        service.close()  # the open log files become .jsonl for the ingest

    app = FastAPI(title="towerflow", lifespan=lifespan, docs_url=None, redoc_url=None)
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
        arm = {"x-towerflow-arm": result["arm"], "x-towerflow-model-version": str(result["model_version"])}
        return JSONResponse(result, headers=arm)

    async def _submit(kind: str, request: dict):
        try:
            result = await batcher.submit(kind, request)
            durable = result.pop(DURABLE, None) if isinstance(result, dict) else None
            if durable is not None:  # the impressions of this answer are on disk before it is sent
                try:
                    await asyncio.wrap_future(durable)
                except OSError:  # logged by the writer; the user still gets the answer
                    service.metrics.log_failed("impression")
            return _reply(result)
        except Exception:  # noqa: BLE001 - a bug answers a JSON 500 without a traceback; logged here
            log.exception("towerflow serve: %s failed", kind)
            return JSONResponse({"error": "internal error (logged by the service)", "field": ""}, status_code=500)

    @app.post("/recommend", openapi_extra=openapi_body(RecommendRequest))
    async def recommend(request: Request):
        try:
            body = RecommendRequest.model_validate_json(await request.body())
        except ValidationError as e:
            return invalid_request(e)
        if body.rank:
            snap = service.snapshot
            if snap is None or snap.ranker is None:
                return JSONResponse({"error": "no ranker is promoted", "field": "rank"}, status_code=409)
        req = body.model_dump()
        if body.rank:  # the ranker re-orders a wider candidate set; k is cut after ranking
            req.update(k=max(body.k, config.rank_candidates), rank_k=body.k)
        t0 = time.perf_counter()
        response = await _submit("recommend", req)
        arm, version = response.headers.get("x-towerflow-arm"), response.headers.get("x-towerflow-model-version")
        if arm is not None:
            service.metrics.arm_answered(arm, version, time.perf_counter() - t0)
        return response

    @app.post("/feedback", openapi_extra=openapi_body(FeedbackRequest))
    async def feedback(request: Request):
        try:
            body = FeedbackRequest.model_validate_json(await request.body())
        except ValidationError as e:
            return invalid_request(e)
        if service.events is None:
            return JSONResponse(
                {"error": "this service logs no events (no landing folder configured)", "field": "request_id"},
                status_code=409,
            )
        served = service.exposures.get(body.request_id)
        if served is None:
            return JSONResponse(
                {
                    "error": f"unknown request_id {body.request_id!r}: not one of the last "
                    f"{config.remembered_requests:,} /recommend answers for a user",
                    "field": "request_id",
                },
                status_code=404,
            )
        if body.item_id not in served.positions:
            return JSONResponse(
                {"error": f"item {body.item_id!r} was not in the answer to {body.request_id}", "field": "item_id"},
                status_code=422,
            )
        timestamp = now_ms() if body.timestamp is None else body.timestamp
        line = feedback_line(body.request_id, served, body.item_id, body.action, timestamp)
        try:
            await asyncio.wrap_future(service.events.submit([line]))  # on disk before the 200
        except OSError as e:
            service.metrics.log_failed("feedback")
            return JSONResponse({"error": f"could not log the feedback ({e}); retry", "field": ""}, status_code=503)
        service.metrics.logged(body.action, 1)
        return {"event_id": line["event_id"], "arm": served.arm, "model_version": served.model_version}

    @app.post("/similar", openapi_extra=openapi_body(SimilarRequest))
    async def similar(request: Request):
        try:
            body = SimilarRequest.model_validate_json(await request.body())
        except ValidationError as e:
            return invalid_request(e)
        return await _submit("similar", body.model_dump())

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        snap = service.snapshot
        if snap is None:
            return JSONResponse({"status": "not ready", "reason": service.not_ready}, status_code=503)
        challenger = service.challenger
        return {
            "status": "ready",
            "model_version": snap.version,
            "index": snap.index_info,
            "known_users": len(snap.histories),
            "loaded_at": snap.loaded_at,
            "challenger": None
            if challenger is None
            else {
                "model_version": challenger.version,
                "index": challenger.index_info,
                "mode": config.ab_mode,
                "share": config.challenger_share,
                "loaded_at": challenger.loaded_at,
            },
        }

    @app.get("/metrics")
    async def metrics(request: Request):
        body, content_type = service.metrics.exposition(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    app.add_middleware(Gate, token=config.token, metrics=service.metrics)
    return app
