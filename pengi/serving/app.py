"""The FastAPI app of `pengi serve`: the model is loaded once in the lifespan, requests are batched by `Batcher`.

    GET  /                          the web page (pengi/serving/static, nothing from the internet)
    GET  /health                    {"status": "ok", ...} once the model is loaded
    GET  /metrics                   Prometheus text format
    GET  /v1/models                 OpenAI's model list, with pengi's details under "pengi"
    POST /v1/chat/completions       OpenAI chat completions with audio parts (Pengi models); "stream": true for SSE
    POST /v1/generate               pengi's own form: files or base64, a prompt per clip, generate's options, windows
    POST /v1/audio/classifications  CLAP zero-shot classification: audio + labels -> scores
    POST /v1/embeddings             CLAP embeddings of texts and audio, OpenAI's embeddings schema

The pieces: `Server` (`server.py`) is what the routes share and how the model is started and stopped; the routes
are in `routes/`, one module per API; `ServingMiddleware` counts requests and enforces the body limit; the error
handlers (`errors.py`) give every failure OpenAI's error schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles

from .errors import APIError, install_handlers
from .middleware import ServingMiddleware, endpoint_of
from .routes import chat, clap, generate, info
from .server import Server
from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def create_app(settings: ServeSettings | None = None, on_fatal: Callable[[str], None] | None = None) -> FastAPI:
    """The app; the model named by ``settings.model`` is loaded in the model process when the app starts.
    ``on_fatal(message)`` is called if the model process dies (the CLI then shuts the server down)."""
    settings = settings or ServeSettings()
    server = Server(settings, on_fatal)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = FastAPI(title="pengi serve", summary="Audio-language models over HTTP: OpenAI-compatible chat "
                  "completions with audio, pengi's generate, CLAP classification and embeddings",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server

    def count_error(request: Request, err: APIError) -> None:
        server.metrics.errors.labels(endpoint_of(request.url.path), err.code or err.type).inc()

    install_handlers(app, count_error)
    app.add_middleware(ServingMiddleware, server=server)
    if settings.allow_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.allow_origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"])
    app.mount("/static", StaticFiles(directory=info.STATIC_DIR), name="static")
    for routes in (info, chat, generate, clap):
        app.include_router(routes.router(server))
    return app
