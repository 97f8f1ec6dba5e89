"""`Server`: what the routes of one app share (settings, the model's front, the worker, the batcher, the decode
pool, the metrics), its start and stop, the checks every route makes, and the work it sends off the event loop.

Processes and threads: the model runs in a process of its own (`pengi.serving.worker`; a thread with
``model_thread``), one call at a time. In the server process the event loop only parses and answers; audio is
decoded and resampled in a thread pool (``decode_workers``). Batched requests (chat completions without streaming,
/v1/generate, CLAP audio) go through the batcher; streamed chat completions, CLAP texts and label scoring are sent to
the model process directly and run between batches.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from fastapi import Request

from pengi.cli.common import pick_device

from .audio_input import AudioRef, Clip, load_clip
from .batcher import Batcher
from .engine import PengiFront, make_front, model_type_of
from .errors import APIError, bad_request, to_api_error
from .metrics import Metrics
from .settings import ServeSettings
from .worker import ModelWorker, ThreadWorker, WorkerSpec

log = logging.getLogger("pengi.serving")


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
            spec = WorkerSpec(s.model, str(device), s.dtype, s.served_model_name, s.threads, s.log_level.upper())
            self.worker = (ThreadWorker if s.model_thread else ModelWorker)(spec, on_death=self._worker_died)
            description = await self.worker.start()
            self.engine = await loop.run_in_executor(self.decode_pool, make_front, description, s.model)
        except (OSError, ValueError, RuntimeError) as err:  # PengiInputError is a ValueError
            self.load_error = f"cannot load the model: {err}"
            if self.worker is not None:
                await self.worker.stop(5)
            raise
        self.batcher = Batcher(self._run_batch, max_batch_size=s.max_batch_size, max_wait_s=s.max_wait_ms / 1000,
                               max_queue=s.max_queue, metrics=self.metrics, map_error=to_api_error,
                               arriving=lambda: self.arriving)
        self.batcher.start()
        log.info("serving %s model %r in %s%s: batches of up to %d clips, waiting at most %g ms", self.engine.kind,
                 self.engine.name, description["dtype"], " (--dtype auto)" if s.dtype == "auto" else "",
                 s.max_batch_size, s.max_wait_ms)

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
