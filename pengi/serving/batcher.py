"""Dynamic batching: requests queue up clip by clip, and one model thread runs them in batches.

A request puts its clips (one per audio input; one per window in windows mode) into the queue under a *key*, its
decoding settings. When the model is free, the batcher takes the key whose oldest clip has waited longest and waits
for more clips of that key, at most ``max_wait_s`` and only while ``max_batch_size`` are not queued yet, then runs
them as one call of ``run_batch(key, payloads)``: a coroutine (the server's sends them to the model process) that
returns one result per clip, an exception standing for a clip that failed. One batch runs at a time. While a batch
runs, new clips keep queueing, so under load batches fill by themselves.

With ``arriving`` (the number of requests the server has accepted but not queued yet: their bodies are being
parsed or their audio decoded), the batcher waits only while more clips can be expected: requests on their way,
or the clients of the batch that just finished, which usually send their next request at once (a client that gets
its answer and asks again is what a load of concurrent clients looks like; clips answered in the last
``EXPECT_RETURN_S`` that have not been followed by as many new clips). A lone request on an idle server therefore
starts at once instead of waiting ``max_wait_s`` for company that is not coming.

One failing clip never fails its neighbours: `run_isolated` (what the model process runs) reruns each clip of a
batched call that raised alone, and only the ones that fail alone get the error. A clip whose request has gone
away (its future cancelled) is dropped before its batch is formed. ``close()`` stops taking clips and returns once
every queued clip has been answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import APIError, to_api_error

log = logging.getLogger("pengi.serving")
EXPECT_RETURN_S = 0.5  # how long the clients of a finished batch are expected to come back


@dataclass
class _Item:
    key: Hashable
    payload: Any
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(self, run_batch: Callable[[Hashable, list[Any]], Awaitable[Sequence[Any]]], *,
                 max_batch_size: int = 32, max_wait_s: float = 0.01, max_queue: int = 4096,
                 metrics: Any = None, map_error: Callable[[BaseException], BaseException] | None = None,
                 arriving: Callable[[], int] | None = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.metrics = metrics
        self.map_error = map_error or to_api_error
        self.arriving = arriving
        self._pending: dict[Hashable, deque[_Item]] = {}
        self._count = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._expected = 0  # clips answered recently and not followed by new ones yet
        self._expected_until = 0.0
        self.batches_run = 0
        self.busy = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="pengi-batcher")

    async def close(self) -> None:
        """Answer every queued clip, then stop."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task

    @property
    def depth(self) -> int:
        return self._count

    def poke(self) -> None:
        """Wake the batcher to look again (a request stopped arriving: it was queued, or failed)."""
        if self._wakeup is not None:
            self._wakeup.set()

    # ------------------------------------------------------------------ submitting
    def submit_many(self, key: Hashable, payloads: Sequence[Any]) -> list[asyncio.Future]:
        """Queue clips under ``key``; returns one future per clip. All of a request's clips are queued or none
        (503 when the queue is full)."""
        if self._closing or self._task is None:
            raise APIError("the server is shutting down", status=503, code="shutting_down")
        if self._count + len(payloads) > self.max_queue:
            raise APIError(f"the server is overloaded ({self._count} clips queued, at most {self.max_queue}); "
                           "retry later", status=503, code="overloaded", headers={"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        queue = self._pending.setdefault(key, deque())
        futures = []
        for payload in payloads:
            item = _Item(key, payload, loop.create_future())
            queue.append(item)
            futures.append(item.future)
        self._count += len(payloads)
        self._expected = max(0, self._expected - len(payloads))
        self._gauge()
        self._wakeup.set()
        return futures

    async def submit(self, key: Hashable, payload: Any) -> Any:
        return await self.submit_many(key, [payload])[0]

    # ------------------------------------------------------------------ the loop
    def _oldest_key(self) -> Hashable:
        return min((q[0].enqueued, i, k) for i, (k, q) in enumerate(self._pending.items()) if q)[2]

    async def _loop(self) -> None:
        while True:
            if not self._count:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            key = self._oldest_key()
            queue = self._pending[key]
            deadline = max(queue[0].enqueued, time.monotonic()) + self.max_wait_s
            while len(queue) < self.max_batch_size and not self._closing:
                if self.arriving is not None and self.arriving() <= 0 and not self._expecting():
                    break  # nothing else is on its way: waiting would only add latency
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch: list[_Item] = []
            while queue and len(batch) < self.max_batch_size:
                item = queue.popleft()
                self._count -= 1
                if not item.future.cancelled():
                    batch.append(item)
            if not queue:
                del self._pending[key]
            self._gauge()
            if not batch:
                continue
            started = time.monotonic()
            if self.metrics is not None:
                for item in batch:
                    self.metrics.queue_wait.observe(started - item.enqueued)
                self.metrics.batch_size.observe(len(batch))
            self.busy = True
            try:
                results = list(await self.run_batch(key, [item.payload for item in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} inputs")
            except Exception as err:  # the call itself failed (e.g. the model process died): this batch only
                results = [self.map_error(err)] * len(batch)
            finally:
                self.busy = False
            self.batches_run += 1
            self._expected = min(self._expected + len(batch), 4 * self.max_batch_size)
            self._expected_until = time.monotonic() + EXPECT_RETURN_S
            if self.metrics is not None:
                self.metrics.batch_seconds.observe(time.monotonic() - started)
            for item, result in zip(batch, results):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)

    def _expecting(self) -> bool:
        return self._expected > 0 and time.monotonic() < self._expected_until

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self._count)


def run_isolated(run_batch: Callable[[Hashable, list[Any]], Sequence[Any]], key: Hashable, payloads: list[Any],
                 map_error: Callable[[BaseException], BaseException] | None = None) -> list[Any]:
    """``run_batch(key, payloads)``, or, if it raises, each payload alone: one result or exception per payload."""
    map_error = map_error or to_api_error
    try:
        results = list(run_batch(key, payloads))
        if len(results) != len(payloads):
            raise RuntimeError(f"run_batch returned {len(results)} results for {len(payloads)} inputs")
        return results
    except Exception as err:
        if len(payloads) == 1:
            return [map_error(err)]
        log.warning("a batch of %d failed (%s: %s); running its clips one by one", len(payloads),
                    type(err).__name__, err)
    out: list[Any] = []
    for payload in payloads:
        try:
            out.append(run_batch(key, [payload])[0])
        except Exception as err:
            out.append(map_error(err))
    return out

