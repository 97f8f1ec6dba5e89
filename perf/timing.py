"""Wall-clock timing of a call on any device: a CUDA device is synchronised before and after, so the time covers
the kernels the call queued, not only their launch."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def timed(fn: Callable[[], T], device: torch.device | str) -> tuple[T, float]:
    """``fn()``'s result and the seconds it took."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def median_time(fn: Callable[[], T], device: torch.device | str, repeats: int) -> tuple[T, float]:
    """``fn()``'s result and the median seconds of ``repeats`` calls, after one call that warms up."""
    out, times = fn(), []
    for _ in range(repeats):
        out, seconds = timed(fn, device)
        times.append(seconds)
    return out, statistics.median(times)
