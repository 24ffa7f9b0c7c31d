"""What every request passes before an endpoint: the bearer token, the body size limit, and the
request count and latency in /metrics.

When a token is configured (TOWERFLOW_API_TOKEN), every endpoint but /healthz needs
`Authorization: Bearer <token>` (401 otherwise). A body over `MAX_BODY` answers 413, whether
its Content-Length says so or a chunked body grows past it.
"""

from __future__ import annotations

import hmac
import json
import time

from models.serving.metrics import ServiceMetrics

MAX_BODY = 1 << 20  # 1 MB


def _json(status: int, body: dict, headers: dict | None = None) -> tuple[int, bytes, list]:
    h = [(b"content-type", b"application/json")] + [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return status, json.dumps(body).encode(), h


class Gate:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): bearer token, body size limit,
    request counts and latency."""

    def __init__(self, app, token: str | None, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics
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
            self.metrics.request(path, status_seen[0], time.perf_counter() - t0)
