"""Decoding audio ahead of the model: items are loaded by a pool of threads while the model works on the batch
before (soundfile and torchaudio release the GIL, so decoding and resampling overlap the model's work)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

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


def prefetched(items: Iterable[T], batch_size: int, load: Callable[[T], Any], workers: int = 2,
               ahead: int = 2) -> Iterator[list[tuple[T, Any]]]:
    """Batches of ``(item, load(item))`` in input order, where a load that raised `PengiInputError` gives the
    error instead (one bad file never stops the others). ``workers`` threads decode up to ``ahead`` batches
    beyond the one being used."""
    source = iter(items)
    window = batch_size * (ahead + 1)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque = deque()

        def fill() -> None:
            for item in source:
                pending.append((item, pool.submit(load_or_error, load, item)))
                if len(pending) >= window:
                    return

        fill()
        while pending:
            batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
            fill()  # keep the pool busy while this batch is used
            yield [(item, future.result()) for item, future in batch]
