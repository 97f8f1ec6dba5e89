"""Decoding audio ahead of the model: items are loaded by a pool of workers while the model works on the batch
before. Threads by default (soundfile and torchaudio release the GIL, so decoding and resampling overlap the
model's work); processes where threads are not enough: a GPU decodes faster than a few threads can feed it, and
the Python that drives the GPU competes with them for the GIL."""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, TypeVar

import torch

from pengi.errors import PengiInputError

T = TypeVar("T")


def batched(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def load_or_error(load: Callable[[T], Any], item: T) -> Any:
    """``load(item)``, or the `PengiInputError` it raised: a bad input becomes data (an error row), never a
    failure of the whole batch."""
    try:
        return load(item)
    except PengiInputError as err:
        return err


_worker_load: Callable[[Any], Any] | None = None  # a decoding process's `load`, sent once when it starts


def _start_worker(load: Callable[[Any], Any]) -> None:
    global _worker_load
    _worker_load = load
    torch.set_num_threads(1)  # one clip at a time per process: many processes, not many threads each


def _load_in_worker(item: Any) -> Any:
    return load_or_error(_worker_load, item)


def prefetched(items: Iterable[T], batch_size: int, load: Callable[[T], Any], workers: int = 2,
               ahead: int = 2, processes: bool = False) -> Iterator[list[tuple[T, Any]]]:
    """Batches of ``(item, load(item))`` in input order, where a load that raised `PengiInputError` gives the
    error instead (one bad file never stops the others). ``workers`` threads (``processes``: worker processes,
    started fresh, so ``load`` must pickle) decode up to ``ahead`` batches beyond the one being used."""
    source = iter(items)
    window = batch_size * (ahead + 1)
    pool: Executor
    if processes:
        # Started fresh rather than forked: the parent may hold a GPU context and threads.
        pool = ProcessPoolExecutor(max_workers=max(1, workers), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(load,))

        def submit(item: T):
            return pool.submit(_load_in_worker, item)
    else:
        pool = ThreadPoolExecutor(max_workers=max(1, workers))

        def submit(item: T):
            return pool.submit(load_or_error, load, item)

    with pool:
        pending: deque = deque()

        def fill() -> None:
            for item in source:
                pending.append((item, submit(item)))
                if len(pending) >= window:
                    return

        fill()
        while pending:
            batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
            fill()  # keep the pool busy while this batch is used
            yield [(item, future.result()) for item, future in batch]
