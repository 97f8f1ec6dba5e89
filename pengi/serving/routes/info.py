"""The routes that describe the server: the web page, ``/health``, ``/metrics`` (Prometheus) and OpenAI's
``/v1/models``, whose entry carries pengi's details (sample rate, clip length, limits, endpoints) under ``pengi``."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from ..server import Server

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "static")


def router(server: Server) -> APIRouter:
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(os.path.join(STATIC_DIR, "index.html"), headers={"Cache-Control": "no-cache"})

    @router.get("/health")
    async def health() -> JSONResponse:
        if server.fatal:
            return JSONResponse({"status": "error", "error": server.fatal}, status_code=503)
        return JSONResponse({"status": "ok", "model": server.engine.name, "kind": server.engine.kind,
                             "queue_depth": server.batcher.depth, "batches": server.batcher.batches_run,
                             "model_pid": server.worker.pid})

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    def model_card() -> dict[str, Any]:
        e, s = server.engine, server.settings
        endpoints = ["/v1/chat/completions", "/v1/generate"] if e.kind == "pengi" else \
            ["/v1/audio/classifications", "/v1/embeddings"]
        return {"id": e.name, "object": "model", "created": e.created, "owned_by": "pengi",
                "root": e.path or e.name, "parent": None,
                "pengi": {**e.info(), "endpoints": endpoints, "max_batch_size": s.max_batch_size,
                          "max_wait_ms": s.max_wait_ms, "max_audio_mb": s.max_audio_mb,
                          "max_audio_seconds": s.max_audio_seconds, "max_request_mb": s.max_request_bytes / 2**20,
                          "remote_audio": s.allow_remote_audio, "api_key_required": bool(s.api_key)}}

    @router.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        server.authorize(request)
        return {"object": "list", "data": [model_card()]}

    @router.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        server.authorize(request)
        server.check_model(model_id)
        return model_card()

    return router
