"""The model process: the model is loaded and run in a child process, the server process talks to it over a pipe.

Why a process and not a thread: `generate` is Python-heavy (for a small model, or a large one on a GPU, most of
its time is the Python around each step), and so is serving HTTP. In one process the two take turns holding the
GIL, so every upload parsed slows the batch that is running, and the batch delays the uploads (the reason vLLM
runs its engine in a process of its own). Here the server process parses, decodes audio and batches; the model
process only runs batches, one call at a time, in arrival order; the messages carry numpy clips and small results.

Protocol (pickled tuples over a `multiprocessing` pipe):

    server -> model   (call_id, method, args)      a call of one of the engine's `calls`
                      ("cancel", call_id)          stop a running stream (the client went away)
                      ("exit",)                    finish the calls already sent, then exit
    model -> server   ("ready", description) | ("failed", message)          once, at startup
                      (call_id, "tokens", [ids])   a streamed call's tokens, as they are made
                      (call_id, "ok", result) | (call_id, "error", APIError)

The model process ignores SIGINT and SIGTERM: the server process handles them (finishing the requests in flight)
and then sends "exit". If the server process dies, the pipe closes and the model process exits too. If the model
process dies, every pending call fails with a 500, /health says 503 and the server shuts down.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .batcher import run_isolated
from .errors import APIError, to_api_error

log = logging.getLogger("pengi.serving")


@dataclass
class WorkerSpec:
    """How to load the model: all plain values, sent to the spawned process."""

    path: str | None
    device: str
    dtype: str
    name: str | None = None
    threads: int | None = None  # torch intra-op threads of the model
    log_level: str = "INFO"

    def load(self) -> Any:
        """The engine, loaded in the thread or process that will run it (torch's thread count is per process)."""
        import torch

        from pengi.cli.common import pick_dtype

        from .engine import load_engine

        if self.threads:
            torch.set_num_threads(self.threads)
        device = torch.device(self.device)
        # auto is resolved here, where the model runs: the server process never touches the GPU.
        return load_engine(self.path, device, pick_dtype(self.dtype, device), self.name)


class Streams:
    """The streamed calls a cancel can reach: the sinks of running ones, and those cancelled before they started."""

    def __init__(self) -> None:
        self.sinks: dict[int, Any] = {}
        self.cancelled: set[int] = set()
        self._lock = threading.Lock()

    def cancel(self, call_id: int) -> None:
        with self._lock:
            sink = self.sinks.get(call_id)
            if sink is not None:
                sink.cancelled = True
            else:
                self.cancelled.add(call_id)

    def start(self, call_id: int, sink: Any) -> None:
        with self._lock:
            if call_id in self.cancelled:
                self.cancelled.discard(call_id)
                raise APIError("the client went away", status=499, code="cancelled")
            self.sinks[call_id] = sink

    def end(self, call_id: int) -> None:
        with self._lock:
            self.sinks.pop(call_id, None)


def run_call(engine: Any, call_id: int, method: str, args: tuple, streams: Streams,
             on_tokens: Callable[[list[int]], None] | None = None) -> Any:
    """One call of the engine, as both workers run it: a batch that fails is rerun clip by clip (`run_isolated`);
    a stream hands its tokens to ``on_tokens`` and stops when its call is cancelled."""
    from .engine import StreamSink

    if method not in engine.calls:
        raise ValueError(f"unknown model call {method!r}")
    if method == "run_batch":
        return run_isolated(engine.run_batch, *args, map_error=to_api_error)
    if method != "run_stream":
        return getattr(engine, method)(*args)
    sink = StreamSink(on_tokens=on_tokens)
    streams.start(call_id, sink)
    try:
        return engine.run_stream(*args, sink)
    finally:
        streams.end(call_id)


# ============================================================================= the model process
def _child_main(conn: Any, spec: WorkerSpec) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=spec.log_level, format="%(levelname)s [model] %(message)s")
    warnings.filterwarnings("ignore", message=r"prompt #\d+ .* was truncated")  # reported in responses instead
    try:
        engine = spec.load()
    except Exception as err:  # the server reports it in one line and exits
        conn.send(("failed", f"{type(err).__name__}: {err}" if not isinstance(err, (OSError, ValueError))
                   else str(err)))
        return
    conn.send(("ready", engine.describe()))
    calls: queue.Queue = queue.Queue()
    streams = Streams()

    def reader() -> None:  # reads while the main thread computes, so that a cancel arrives mid-generation
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the server process is gone
                calls.put(None)
                return
            if message[0] == "cancel":
                streams.cancel(message[1])
            elif message[0] == "exit":
                calls.put(None)
                return
            else:
                calls.put(message)

    threading.Thread(target=reader, name="pengi-model-reader", daemon=True).start()
    while (message := calls.get()) is not None:
        call_id, method, args = message
        try:
            result = run_call(engine, call_id, method, args, streams,
                              on_tokens=lambda tokens, cid=call_id: conn.send((cid, "tokens", tokens)))
            conn.send((call_id, "ok", result))
        except Exception as err:
            conn.send((call_id, "error", to_api_error(err)))
        except BaseException:
            break
    conn.close()


# ============================================================================= the server's side
@dataclass
class _Pending:
    future: asyncio.Future
    on_tokens: Callable[[list[int]], None] | None = None


class ModelWorker:
    """The server's handle on the model process."""

    def __init__(self, spec: WorkerSpec, on_death: Callable[[str], None] | None = None):
        self.spec = spec
        self.on_death = on_death
        self.description: dict[str, Any] | None = None
        self.dead: str | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._stopping = False
        self._send_lock = threading.Lock()

    async def start(self) -> dict[str, Any]:
        """Spawn the model process and wait until its model is loaded; returns the engine's description."""
        self.loop = asyncio.get_running_loop()
        ctx = multiprocessing.get_context("spawn")  # never fork a process that has started threads
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_child_main, args=(child, self.spec), name="pengi-model", daemon=True)
        with _main_module_hidden():
            self.process.start()
        child.close()
        first = await self.loop.run_in_executor(None, self._first_message)
        if first[0] != "ready":
            self.process.join(10)
            raise RuntimeError(first[1])
        self.description = first[1]
        threading.Thread(target=self._reader, name="pengi-model-pipe", daemon=True).start()
        log.info("model process %d ready", self.process.pid)
        return self.description

    def _first_message(self) -> tuple:
        while not self.conn.poll(0.25):
            if not self.process.is_alive():
                return ("failed", f"the model process exited with status {self.process.exitcode} while loading")
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return ("failed", "the model process exited while loading")

    def _reader(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self.loop.call_soon_threadsafe(self._died)
                return
            self.loop.call_soon_threadsafe(self._deliver, *message)

    def _deliver(self, call_id: int, kind: str, value: Any) -> None:
        pending = self._pending.get(call_id)
        if pending is None:
            return
        if kind == "tokens":
            if pending.on_tokens is not None:
                pending.on_tokens(value)
            return
        del self._pending[call_id]
        if pending.future.done():
            return
        if kind == "ok":
            pending.future.set_result(value)
        else:
            pending.future.set_exception(value)

    def _died(self) -> None:
        if self._stopping:
            return
        self.process.join(1)
        self.dead = f"the model process exited unexpectedly (status {self.process.exitcode})"
        log.critical("%s; failing %d pending call(s)", self.dead, len(self._pending))
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(APIError(self.dead, status=500, code="model_process_died"))
        self._pending.clear()
        if self.on_death is not None:
            self.on_death(self.dead)

    # ------------------------------------------------------------------ calls
    def submit(self, method: str, *args: Any, on_tokens: Callable[[list[int]], None] | None = None
               ) -> tuple[int, asyncio.Future]:
        if self.dead:
            raise APIError(self.dead, status=503, code="model_process_died")
        call_id = next(self._ids)
        future = self.loop.create_future()
        self._pending[call_id] = _Pending(future, on_tokens)
        try:
            with self._send_lock:
                self.conn.send((call_id, method, args))
        except (OSError, ValueError) as err:
            self._pending.pop(call_id, None)
            raise APIError(f"the model process cannot be reached: {err}", status=503,
                           code="model_process_died") from None
        return call_id, future

    async def call(self, method: str, *args: Any) -> Any:
        return await self.submit(method, *args)[1]

    def cancel(self, call_id: int) -> None:
        pending = self._pending.get(call_id)
        if self.dead or pending is None:
            return
        pending.future.add_done_callback(_consume)  # nobody waits for it any more
        try:
            with self._send_lock:
                self.conn.send(("cancel", call_id))
        except (OSError, ValueError):
            pass

    async def stop(self, timeout: float = 60.0) -> None:
        """Let the model process finish the calls already sent, then end it."""
        if not hasattr(self, "process"):
            return
        self._stopping = True
        if self.process.is_alive():
            try:
                with self._send_lock:
                    self.conn.send(("exit",))
            except (OSError, ValueError):
                pass
            await self.loop.run_in_executor(None, self.process.join, timeout)
        if self.process.is_alive():
            log.warning("the model process did not exit in %g s; terminating it", timeout)
            self.process.terminate()
            await self.loop.run_in_executor(None, self.process.join, 10)
        self.conn.close()

    @property
    def pid(self) -> int | None:
        return getattr(self, "process", None) and self.process.pid


class ThreadWorker:
    """``--model-thread``: the same interface as `ModelWorker`, with the model on one thread of the server process.

    It starts faster and holds one copy of the libraries, but the model and the request handling then take turns
    on the GIL; it is for machines where the server gets one core anyway, and for debugging.
    """

    def __init__(self, spec: WorkerSpec, on_death: Callable[[str], None] | None = None):
        self.spec = spec
        self.description: dict[str, Any] | None = None
        self.dead: str | None = None
        self._ids = itertools.count(1)
        self._futures: dict[int, asyncio.Future] = {}
        self._streams = Streams()

    async def start(self) -> dict[str, Any]:
        from concurrent.futures import ThreadPoolExecutor

        self.loop = asyncio.get_running_loop()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pengi-model")
        self.engine = await self.loop.run_in_executor(self.pool, self.spec.load)
        self.description = self.engine.describe()
        return self.description

    def submit(self, method: str, *args: Any, on_tokens: Callable[[list[int]], None] | None = None
               ) -> tuple[int, asyncio.Future]:
        call_id = next(self._ids)

        def run() -> Any:
            try:
                return run_call(self.engine, call_id, method, args, self._streams,
                                on_tokens=lambda t: self.loop.call_soon_threadsafe(on_tokens, t))
            except Exception as err:
                raise to_api_error(err) from None

        future = self.loop.run_in_executor(self.pool, run)
        self._futures[call_id] = future
        future.add_done_callback(lambda _: self._futures.pop(call_id, None))
        return call_id, future

    async def call(self, method: str, *args: Any) -> Any:
        return await self.submit(method, *args)[1]

    def cancel(self, call_id: int) -> None:
        future = self._futures.get(call_id)
        if future is None:
            return
        future.add_done_callback(_consume)
        self._streams.cancel(call_id)

    async def stop(self, timeout: float = 60.0) -> None:
        if hasattr(self, "pool"):
            await self.loop.run_in_executor(None, self.pool.shutdown, True)

    @property
    def pid(self) -> int:
        return os.getpid()


def _consume(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start a spawned process without re-importing ``__main__`` in it (multiprocessing does that by default): the
    model process needs nothing from it, the `pengi` CLI's imports cost seconds, and a user's script that creates
    the app at top level would otherwise run again in the child."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)
