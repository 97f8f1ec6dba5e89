"""The server's ASGI middleware: requests and latency counted per endpoint, the HTTP body limit (413) enforced
before and while a body is read, and a model that cannot be loaded reported in one line."""

from __future__ import annotations

import time
from typing import Any

from fastapi.responses import JSONResponse

from .errors import APIError
from .server import Server

ENDPOINTS = ("/", "/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/generate", "/v1/embeddings",
             "/v1/audio/classifications")


def endpoint_of(path: str) -> str:
    """A bounded label for metrics: the endpoint, or "other" (so that scans of random paths add no series)."""
    if path in ENDPOINTS:
        return path
    if path.startswith("/static/"):
        return "/static"
    if path.startswith("/v1/models/"):
        return "/v1/models"
    return "other"


class ServingMiddleware:
    """Counts requests and latency per endpoint, and enforces the HTTP body limit (413), as plain ASGI."""

    def __init__(self, app: Any, server: Server):
        self.app = app
        self.server = server

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            async def lifespan_send(message: dict) -> None:
                # a model that cannot be loaded is reported in one line, not with the lifespan's traceback
                if message["type"] == "lifespan.startup.failed" and self.server.load_error:
                    message = {**message, "message": self.server.load_error}
                await send(message)

            await self.app(scope, receive, lifespan_send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.server.metrics
        endpoint = endpoint_of(scope["path"])
        limit = self.server.settings.max_request_bytes
        status = 500
        started = time.perf_counter()

        async def send_(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        too_large = APIError(f"the request body is larger than the limit of {limit / 2**20:.1f} MB "
                             "(--max-request-mb; audio files are limited by --max-audio-mb)", status=413,
                             code="request_too_large")
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        metrics.in_flight.inc()
        try:
            if length.isdigit() and int(length) > limit:
                metrics.errors.labels(endpoint, too_large.code).inc()
                response = JSONResponse(too_large.body(), status_code=413, headers={"Connection": "close"})
                await response(scope, receive, send_)
                return
            received = 0

            async def receive_() -> dict:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise too_large
                return message

            await self.app(scope, receive_, send_)
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(endpoint, str(status)).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
