"""The FastAPI app of `pengi serve`: the model is loaded once in the lifespan, requests are batched by `Batcher`.

    GET  /                          the web page (pengi/serving/static, nothing from the internet)
    GET  /health                    {"status": "ok", ...} once the model is loaded
    GET  /metrics                   Prometheus text format
    GET  /v1/models                 OpenAI's model list, with pengi's details under "pengi"
    POST /v1/chat/completions       OpenAI chat completions with audio parts (Pengi models); "stream": true for SSE
    POST /v1/generate               pengi's own form: files or base64, a prompt per clip, generate's options, windows
    POST /v1/audio/classifications  CLAP zero-shot classification: audio + labels -> scores
    POST /v1/embeddings             CLAP embeddings of texts and audio, OpenAI's embeddings schema

Processes and threads: the model runs in a process of its own (`pengi.serving.worker`), one call at a time. In the
server process the event loop only parses and answers; audio is decoded and resampled in a thread pool
(``decode_workers``). Batched requests (chat completions without streaming, /v1/generate, CLAP audio) go through
the batcher; streamed chat completions, CLAP texts and label scoring are sent to the model process directly and run
between batches.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from pengi import CLAP, PengiInputError

from . import openai_api as oa
from .audio_input import AudioLimits, AudioRef, Clip, check_size, load_clip
from .batcher import Batcher
from .engine import ClapFront, ClipJob, ClipResult, PengiFront, make_front, model_type_of
from .errors import APIError, bad_request, from_input_error, install_handlers, internal_error
from .metrics import Metrics
from .native_api import (
    FILE_FIELDS,
    MAX_INPUTS,
    Body,
    format_from_name,
    parse_classify,
    parse_embeddings,
    parse_generate,
)
from .worker import ModelWorker, ThreadWorker, WorkerSpec

log = logging.getLogger("pengi.serving")
STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
ENDPOINTS = ("/", "/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/generate", "/v1/embeddings",
             "/v1/audio/classifications")
JSON_IN_POOL_BYTES = 1 << 20  # bodies above this are parsed in the decode pool, off the event loop


@dataclass
class ServeSettings:
    """What `pengi serve` is started with (see `pengi.serving.cli` for each option's meaning)."""

    model: str | None = None
    served_model_name: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    max_batch_size: int = 32
    max_wait_ms: float = 10.0
    max_queue: int = 4096
    max_audio_mb: float = 25.0
    max_audio_seconds: float = 600.0
    max_request_mb: float | None = None
    allow_remote_audio: bool = False
    remote_audio_timeout: float = 10.0
    decode_workers: int = 4
    torch_threads: int | None = None
    model_thread: bool = False
    api_key: str | None = None
    allow_origins: list[str] = field(default_factory=list)
    log_level: str = "info"

    @property
    def max_request_bytes(self) -> int:
        """The HTTP body limit: by default one audio file of ``max_audio_mb`` in base64, plus 1 MB."""
        if self.max_request_mb is not None:
            return int(self.max_request_mb * 2**20)
        return int(self.max_audio_mb * 2**20 * 4 / 3) + 2**20

    def limits(self) -> AudioLimits:
        return AudioLimits(int(self.max_audio_mb * 2**20), self.max_audio_seconds, self.allow_remote_audio,
                           self.remote_audio_timeout)


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA, else MPS, else CPU (as `pengi`'s other commands choose)."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as err:
            raise ValueError(f"--device: {err}; use auto, cpu, cuda, cuda:N or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device: CUDA is not available on this machine; use --device cpu or auto")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError("--device: MPS is not available on this machine; use --device cpu or auto")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def endpoint_of(path: str) -> str:
    """A bounded label for metrics: the endpoint, or "other" (so that scans of random paths add no series)."""
    if path in ENDPOINTS:
        return path
    if path.startswith("/static/"):
        return "/static"
    if path.startswith("/v1/models/"):
        return "/v1/models"
    return "other"


class Server:
    """Everything the routes share: settings, the engine, the batcher, the pools and the metrics."""

    def __init__(self, settings: ServeSettings, on_fatal: Any = None):
        self.settings = settings
        self.on_fatal = on_fatal
        self.engine: Any = None  # a Front: the model's processor and facts, in this process
        self.worker: ModelWorker | None = None
        self.limits = settings.limits()
        self.metrics = Metrics(settings.max_batch_size)
        self.decode_pool = ThreadPoolExecutor(max_workers=max(settings.decode_workers, 1),
                                              thread_name_prefix="pengi-decode")
        self.batcher: Batcher | None = None
        self.load_error: str | None = None
        self.fatal: str | None = None
        self.arriving = 0  # requests accepted and not queued yet (the batcher waits for them only)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        try:
            device = pick_device(s.device)
            kind = model_type_of(s.model)
            if kind not in ("pengi", "pengi_clap", None):
                raise ValueError(f"{s.model} holds a {kind!r} model; pengi serve serves Pengi and CLAP models")
            log.info("loading %s on %s (%s) %s", s.model or "the default model shipped with pengi", device, s.dtype,
                     "on a model thread" if s.model_thread else "in the model process")
            spec = WorkerSpec(s.model, str(device), s.dtype, s.served_model_name, s.torch_threads, s.log_level.upper())
            self.worker = (ThreadWorker if s.model_thread else ModelWorker)(spec, on_death=self._worker_died)
            description = await self.worker.start()
            self.engine = await loop.run_in_executor(self.decode_pool, make_front, description, s.model)
        except (OSError, ValueError, RuntimeError) as err:  # PengiInputError is a ValueError
            self.load_error = f"cannot load the model: {err}"
            if self.worker is not None:
                await self.worker.stop(5)
            raise
        self.batcher = Batcher(self._run_batch, max_batch_size=s.max_batch_size, max_wait_s=s.max_wait_ms / 1000,
                               max_queue=s.max_queue, metrics=self.metrics, map_error=map_model_error,
                               arriving=lambda: self.arriving)
        self.batcher.start()
        log.info("serving %s model %r: batches of up to %d clips, waiting at most %g ms", self.engine.kind,
                 self.engine.name, s.max_batch_size, s.max_wait_ms)

    async def _run_batch(self, key: Any, payloads: list[Any]) -> list[Any]:
        return await self.worker.call("run_batch", key, payloads)

    def _worker_died(self, message: str) -> None:
        self.fatal = message
        if self.on_fatal is not None:
            self.on_fatal(message)

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()  # answers everything still queued
        if self.worker is not None:
            await self.worker.stop()
        self.decode_pool.shutdown(wait=True)

    # ------------------------------------------------------------------ checks
    def authorize(self, request: Request) -> None:
        key = self.settings.api_key
        if not key:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            raise APIError("missing or wrong API key: send the header 'Authorization: Bearer <key>'", status=401,
                           code="invalid_api_key")

    def names(self) -> set[str]:
        names = {self.engine.name}
        if self.settings.model:
            names |= {self.settings.model, os.path.abspath(self.settings.model)}
        return names

    def check_model(self, name: str | None) -> str:
        if name is not None and name not in self.names():
            raise APIError(f"model {name!r} is not served here; this server serves {self.engine.name!r} "
                           "(GET /v1/models)", status=404, param="model", code="model_not_found")
        return self.engine.name

    def require(self, kind: str, endpoint: str) -> Any:
        if self.engine.kind != kind:
            if self.engine.kind == "clap":
                what = ("a CLAP model: it classifies and embeds audio (POST /v1/audio/classifications, "
                        "POST /v1/embeddings) and generates no text")
            else:
                what = ("a Pengi model: it answers prompts about audio (POST /v1/chat/completions, POST /v1/generate);"
                        " classification and embeddings need a CLAP model")
            raise bad_request(f"{endpoint} is not available: {self.engine.name!r} is {what}", "model",
                              "wrong_model_kind")
        return self.engine

    @contextmanager
    def arrival(self) -> Iterator[None]:
        """Count a request as on its way to the batcher while its body is read and its audio decoded."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1
            if self.batcher is not None:
                self.batcher.poke()

    async def results(self, futures: list[asyncio.Future]) -> list[Any]:
        """The results of queued clips (the first error is raised; the rest are dropped if not started)."""
        try:
            return list(await asyncio.gather(*futures))
        finally:
            for f in futures:
                if not f.done():
                    f.cancel()

    # ------------------------------------------------------------------ work off the event loop
    async def load(self, ref: AudioRef, fit: str = "clip", hop_seconds: float | None = None
                   ) -> tuple[Clip, list[Any]]:
        """Decode one audio input in the decode pool: the clip, and its model inputs (one clip, or its windows)."""
        proc = self.engine.processor

        def work() -> tuple[Clip, list[Any]]:  # model inputs as numpy: they are pickled to the model process
            clip = load_clip(ref, proc, self.limits)
            if fit == "windows":
                return clip, [(w.start, w.end, w.wave.numpy()) for w in proc.windows(clip.wave, hop_seconds)]
            return clip, [proc.clip(clip.wave).numpy()]

        return await asyncio.get_running_loop().run_in_executor(self.decode_pool, work)

    async def load_all(self, refs: list[AudioRef], fit: str = "clip", hop_seconds: float | None = None
                       ) -> list[tuple[Clip, list[Any]]]:
        loaded = await asyncio.gather(*(self.load(r, fit, hop_seconds) for r in refs), return_exceptions=True)
        for item in loaded:
            if isinstance(item, BaseException):
                raise item
        return loaded

    async def prompt_warnings(self, prompts: list[str], params: list[str]) -> list[str]:
        """The engine's warnings about prompts (tokenizing a new prompt happens in the decode pool)."""
        engine: PengiFront = self.engine
        pairs = dict(zip(prompts, params))

        def work() -> list[str]:
            return [w for prompt, param in pairs.items() for w in engine.prompt_warnings(prompt, param)]

        if all(engine.knows_prompt(p) for p in pairs):
            return work()
        return await asyncio.get_running_loop().run_in_executor(self.decode_pool, work)

    async def run_model(self, method: str, *args: Any) -> Any:
        """A call in the model process, outside the batcher (between batches): CLAP texts and label scores."""
        return await self.worker.call(method, *args)


def map_model_error(err: BaseException) -> BaseException:
    if isinstance(err, APIError):
        return err
    if isinstance(err, PengiInputError):
        return from_input_error(err)
    log.error("model call failed", exc_info=err)
    return internal_error(err)


# ----------------------------------------------------------------------------- request bodies
async def read_body(request: Request, server: Server) -> Body:
    """JSON (checked to be an object) or a multipart/urlencoded form (uploaded files checked against the limit)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return await read_form(request, server)
    if ctype not in ("", "application/json", "text/json") and not ctype.endswith("+json"):
        raise APIError(f"unsupported content type {ctype!r}; send application/json or multipart/form-data",
                       status=415, code="unsupported_media_type")
    raw = await request.body()
    if not raw.strip():
        raise bad_request("the request body is empty; send a JSON object", None, "invalid_json")
    try:
        if len(raw) > JSON_IN_POOL_BYTES:
            obj = await asyncio.get_running_loop().run_in_executor(server.decode_pool, json.loads, raw)
        else:
            obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise bad_request(f"malformed JSON body: {err}", None, "invalid_json") from None
    if not isinstance(obj, dict):
        raise bad_request(f"the request body must be a JSON object, got {oa._kind(obj)}", None, "invalid_json")
    return Body(obj)


async def read_form(request: Request, server: Server) -> Body:
    try:
        form = await request.form(max_files=MAX_INPUTS, max_fields=MAX_INPUTS + 100)
    except StarletteHTTPException as err:  # malformed multipart
        raise bad_request(f"malformed form body: {err.detail}", None, "invalid_form") from None
    values: dict[str, list[Any]] = {}
    uploads: list[tuple[str, UploadFile]] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key not in FILE_FIELDS:
                raise bad_request(f"{key}: unexpected file field; upload audio files as 'file'", key)
            uploads.append((key, value))
        else:
            values.setdefault(key, []).append(value)
    files = []
    try:
        for i, (key, upload) in enumerate(uploads):
            param = f"{key}[{i}]" if len(uploads) > 1 else key
            label = f"{param} ({upload.filename})" if upload.filename else param
            if upload.size is not None:
                check_size(upload.size, server.limits, label, param)
            fmt = format_from_name(upload.filename, upload.content_type, param)
            data = await upload.read()
            files.append(AudioRef(param, "bytes", data, fmt, upload.filename or None))
    finally:
        await form.close()
    return Body(values, files, is_form=True)


def requested_model(body: Body) -> str | None:
    """The body's ``model``, checked first so that a request for another model gets 404 whatever else is in it."""
    name = body.get("model")
    if name is not None and not isinstance(name, str):
        raise bad_request(f"model: expected a string, got {oa._kind(name)}", "model")
    return name or None


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'), ensure_ascii=False)}\n\n"


# ----------------------------------------------------------------------------- the app
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


def create_app(settings: ServeSettings | None = None, on_fatal: Any = None) -> FastAPI:
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

    # ------------------------------------------------------------------ page, health, metrics, models
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(os.path.join(STATIC_DIR, "index.html"), headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def health() -> JSONResponse:
        if server.fatal:
            return JSONResponse({"status": "error", "error": server.fatal}, status_code=503)
        return JSONResponse({"status": "ok", "model": server.engine.name, "kind": server.engine.kind,
                             "queue_depth": server.batcher.depth, "batches": server.batcher.batches_run,
                             "model_pid": server.worker.pid})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    def model_card() -> dict[str, Any]:
        e, s = server.engine, settings
        endpoints = ["/v1/chat/completions", "/v1/generate"] if e.kind == "pengi" else \
            ["/v1/audio/classifications", "/v1/embeddings"]
        return {"id": e.name, "object": "model", "created": e.created, "owned_by": "pengi",
                "root": e.path or e.name, "parent": None,
                "pengi": {**e.info(), "endpoints": endpoints, "max_batch_size": s.max_batch_size,
                          "max_wait_ms": s.max_wait_ms, "max_audio_mb": s.max_audio_mb,
                          "max_audio_seconds": s.max_audio_seconds, "max_request_mb": s.max_request_bytes / 2**20,
                          "remote_audio": s.allow_remote_audio, "api_key_required": bool(s.api_key)}}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        server.authorize(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        server.authorize(request)
        server.check_model(model_id)
        return model_card()

    # ------------------------------------------------------------------ chat completions
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        server.authorize(request)
        engine: PengiFront = server.require("pengi", "/v1/chat/completions")
        with server.arrival():
            body = await read_body(request, server)
            if body.is_form:
                raise APIError("send chat completions as application/json", status=415,
                               code="unsupported_media_type")
            name = server.check_model(requested_model(body))
            req = oa.parse_chat(body.values, max_new_tokens_limit=engine.max_new_tokens_limit,
                                reads_prompt=engine.reads_prompt)
            engine.processor.check_prompts([req.prompt], names=[req.prompt_param])
            req.warnings += await server.prompt_warnings([req.prompt], [req.prompt_param])
            clip, waves = await server.load(req.audio)
            req.warnings += engine.clip_warnings(clip.seconds, req.audio.label)
            job = ClipJob(waves[0], req.prompt)
            rid, created = oa.new_id("chatcmpl"), oa.now()
            key = req.decoding.batch_key(rid)
            if req.stream:
                return start_stream(server, engine, req, job, key, rid, created, name)
            futures = server.batcher.submit_many(key, [job])
        result: ClipResult = (await server.results(futures))[0]
        choices = []
        for text, reason in zip(result.texts, result.finish_reasons):
            text, hit = oa.apply_stop(text, req.stop)
            choices.append((text, "stop" if hit else reason))
        choices *= req.copies
        generated = sum(result.completion_tokens)
        server.metrics.tokens.inc(generated)
        usage = oa.usage(result.prompt_tokens, generated * req.copies, engine.audio_prefix_length)
        return JSONResponse(oa.completion(rid, created, name, choices, usage, req.warnings))

    # ------------------------------------------------------------------ pengi's generate
    @app.post("/v1/generate")
    async def generate(request: Request) -> JSONResponse:
        server.authorize(request)
        started = time.perf_counter()
        engine: PengiFront = server.require("pengi", "/v1/generate")
        with server.arrival():
            body = await read_body(request, server)
            name = server.check_model(requested_model(body))
            req = parse_generate(body, max_new_tokens_limit=engine.max_new_tokens_limit,
                                 reads_prompt=engine.reads_prompt)
            engine.processor.check_prompts(req.prompts, names=req.prompt_params)
            warnings = await server.prompt_warnings(req.prompts, req.prompt_params)
            loaded = await server.load_all(req.audio, "windows" if req.windows else "clip", req.hop_seconds)
            jobs = []
            for (clip, parts), ref, prompt in zip(loaded, req.audio, req.prompts):
                if not req.windows:
                    warnings += engine.clip_warnings(clip.seconds, ref.label)
                jobs += [ClipJob(part[2] if req.windows else part, prompt) for part in parts]
            rid = oa.new_id("gen")
            futures = server.batcher.submit_many(req.decoding.batch_key(rid), jobs)
        results: list[ClipResult] = await server.results(futures)
        outputs = iter(results)
        many = req.decoding.num_return_sequences > 1
        scores = req.decoding.return_scores

        def answer(r: ClipResult) -> dict[str, Any]:
            out: dict[str, Any] = {"texts": r.texts} if many else {"text": r.texts[0]}
            out.update({"finish_reasons": r.finish_reasons} if many else {"finish_reason": r.finish_reasons[0]})
            if scores:
                out.update({"scores": r.scores} if many else {"score": r.scores[0]})
            return out

        items = []
        for i, ((clip, parts), ref, prompt) in enumerate(zip(loaded, req.audio, req.prompts)):
            item: dict[str, Any] = {"index": i, "audio": ref.name or ref.param, "prompt": prompt,
                                    "duration": round(clip.seconds, 3)}
            if req.windows:
                item["windows"] = [{"start": round(start, 3), "end": round(end, 3), **answer(next(outputs))}
                                   for start, end, _ in parts]
            else:
                item.update(answer(next(outputs)))
            items.append(item)
        generated = sum(sum(r.completion_tokens) for r in results)
        server.metrics.tokens.inc(generated)
        body_out: dict[str, Any] = {
            "id": rid, "object": "pengi.generation", "created": oa.now(), "model": name, "results": items,
            "usage": {**oa.usage(sum(r.prompt_tokens for r in results), generated), "clips": len(jobs)},
            "timing": {"total_ms": round((time.perf_counter() - started) * 1000, 1)},
        }
        if warnings:
            body_out["warnings"] = warnings
        return JSONResponse(body_out)

    # ------------------------------------------------------------------ CLAP
    @app.post("/v1/audio/classifications")
    async def classify(request: Request) -> JSONResponse:
        server.authorize(request)
        server.require("clap", "/v1/audio/classifications")
        with server.arrival():
            body = await read_body(request, server)
            name = server.check_model(requested_model(body))
            req = parse_classify(body)
            texts = CLAP.label_texts(req.labels, req.template)
            loaded = await server.load_all(req.audio)
            futures = server.batcher.submit_many(("clap_audio",), [parts[0] for _, parts in loaded])
        embeds = await server.results(futures)
        probs = await server.run_model("classify", embeds, texts, req.multi_label)
        data = []
        for i, ((clip, _), ref, row) in enumerate(zip(loaded, req.audio, probs)):
            order = np.argsort(-row, kind="stable")[:req.top_k]
            labels, scores = [req.labels[j] for j in order], [float(row[j]) for j in order]
            data.append({"index": i, "audio": ref.name or ref.param, "duration": round(clip.seconds, 3),
                         "label": labels[0], "score": scores[0], "labels": labels, "scores": scores})
        return JSONResponse({"object": "list", "model": name, "data": data, "template": req.template,
                             "multi_label": req.multi_label})

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        server.authorize(request)
        engine: ClapFront = server.require("clap", "/v1/embeddings")
        with server.arrival():
            body = await read_body(request, server)
            name = server.check_model(requested_model(body))
            req = parse_embeddings(body)
            if req.dimensions is not None and req.dimensions != engine.dimensions:
                raise bad_request(f"dimensions: this model's embeddings have {engine.dimensions} dimensions, got "
                                  f"{req.dimensions}", "dimensions")
            texts = [x for x in req.items if isinstance(x, str)]
            refs = [x for x in req.items if isinstance(x, AudioRef)]
            loaded = await server.load_all(refs)
            futures = server.batcher.submit_many(("clap_audio",), [parts[0] for _, parts in loaded]) if refs else []
        audio_embeds = iter(await server.results(futures))
        text_embeds = iter(await server.run_model("embed_texts", texts) if texts else [])
        ordered = [next(text_embeds) if isinstance(x, str) else next(audio_embeds) for x in req.items]
        tokens = engine.count_tokens(texts) if texts else 0
        return JSONResponse({"object": "list", "model": name, "data": oa.embedding_items(ordered, req.encoding_format),
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    return app


def start_stream(server: Server, engine: PengiFront, req: oa.ChatRequest, job: ClipJob, key: Any, rid: str,
                 created: int, name: str) -> StreamingResponse:
    queue: asyncio.Queue = asyncio.Queue()
    call_id, future = server.worker.submit("run_stream", key, job, on_tokens=queue.put_nowait)
    future.add_done_callback(lambda _: queue.put_nowait(None))
    return StreamingResponse(stream_chat(server, engine, req, rid, created, name, call_id, future, queue),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def stream_chat(server: Server, engine: PengiFront, req: oa.ChatRequest, rid: str, created: int, name: str,
                      call_id: int, future: asyncio.Future, queue: asyncio.Queue) -> AsyncIterator[str]:
    """Server-Sent Events in OpenAI's chunk format; the model process hands over tokens as it makes them.

    Streamed requests are not batched: each runs alone in the model process, between batches. The text is
    decoded from the tokens so far, holding back trailing spaces, an incomplete UTF-8 character and anything
    that could still become a stop sequence, so the concatenated deltas equal the non-streamed answer.
    """
    rows = req.n if req.decoding.do_sample else 1
    choices_of = [[r] for r in range(rows)] if rows == req.n else [list(range(req.n))]
    hold = max((len(s) for s in req.stop), default=1) - 1
    finished = False

    def delta_chunks(row: int, text: str) -> list[str]:
        return [sse(oa.chunk(rid, created, name, c, {"content": text})) for c in choices_of[row]]

    try:
        for c in range(req.n):
            yield sse(oa.chunk(rid, created, name, c, {"role": "assistant", "content": ""}))
        ids: list[list[int]] = [[] for _ in range(rows)]
        ended, stopped, sent = [False] * rows, [False] * rows, [""] * rows
        while True:
            tokens = await queue.get()
            if tokens is None:
                break
            if len(tokens) != rows:
                continue
            for r, t in enumerate(tokens):
                if not ended[r]:
                    if t in engine.stop_ids:
                        ended[r] = True
                    else:
                        ids[r].append(t)
            for r in range(rows):
                if stopped[r]:
                    continue
                text, hit = oa.apply_stop(engine.decode_tokens(ids[r]).lstrip(), req.stop)
                if hit:
                    stopped[r] = True
                else:
                    text = text.rstrip().rstrip("\ufffd")
                    text = text[:max(len(text) - hold, len(sent[r]))]
                if text.startswith(sent[r]) and len(text) > len(sent[r]):
                    for out in delta_chunks(r, text[len(sent[r]):]):
                        yield out
                    sent[r] = text
        result: ClipResult = await future
        generated = sum(result.completion_tokens)
        server.metrics.tokens.inc(generated)
        for r in range(rows):
            text, hit = oa.apply_stop(result.texts[r], req.stop)
            if text.startswith(sent[r]):
                if len(text) > len(sent[r]):
                    for out in delta_chunks(r, text[len(sent[r]):]):
                        yield out
            else:
                log.warning("streamed text %r is not a prefix of the answer %r", sent[r], text)
            reason = "stop" if hit else result.finish_reasons[r]
            for c in choices_of[r]:
                yield sse(oa.chunk(rid, created, name, c, {}, reason))
        if req.include_usage:
            usage = oa.usage(result.prompt_tokens, generated * req.copies, engine.audio_prefix_length)
            yield sse(oa.chunk(rid, created, name, None, usage_=usage))
        yield "data: [DONE]\n\n"
        finished = True
    except Exception as err:
        finished = True
        err = map_model_error(err)
        server.metrics.errors.labels("/v1/chat/completions", getattr(err, "code", None) or "internal_error").inc()
        yield sse(err.body() if isinstance(err, APIError) else internal_error(err).body())
        yield "data: [DONE]\n\n"
    finally:
        if not finished:
            server.worker.cancel(call_id)  # the client went away: stop generating
