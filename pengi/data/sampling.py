"""Which rows make a training epoch, in which order: readable rows only, durations for bucketing, seeded
duration-bucketed batches that resume mid-epoch, and weighted mixtures of manifests."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import datasets
import soundfile as sf
import torch

log = logging.getLogger("pengi")


def readable(rows: datasets.Dataset, num_proc: int | None = None) -> datasets.Dataset:
    """Drop rows whose audio file is missing or has no readable header, logging how many and which first.

    Run before training so that a missing file costs one log line, not a crashed run hours in.
    """

    def ok(row: Mapping[str, Any]) -> bool:
        try:
            return sf.info(row["audio"]).frames > 0
        except Exception:
            return False

    kept = rows.filter(ok, num_proc=num_proc)
    if len(kept) < len(rows):
        bad = next(r["audio"] for r in rows if not ok(r))
        log.warning("dropped %d of %d rows whose audio is missing or unreadable (first: %s)",
                    len(rows) - len(kept), len(rows), bad)
    return kept


def durations(rows: datasets.Dataset, num_proc: int | None = None) -> list[float]:
    """Each row's duration in seconds: the manifest's ``duration`` when given, else read from the file header."""

    def measure(row: Mapping[str, Any]) -> dict[str, float]:
        if row.get("duration"):
            return {"_seconds": float(row["duration"])}
        try:
            return {"_seconds": max(sf.info(row["audio"]).duration - (row.get("offset") or 0.0), 0.0)}
        except Exception:
            return {"_seconds": 0.0}

    return rows.map(measure, num_proc=num_proc)["_seconds"]


class DurationBucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of clips of similar duration, so that variable-length models pad little.

    Indices are sorted by duration, cut into buckets of ``batch_size * bucket_batches`` clips, shuffled
    within each bucket, cut into batches, and the batches shuffled; all seeded by ``(seed, epoch)``.
    A resumed run continues an epoch where it stopped by skipping the first batches of the same order
    (accelerate's ``skip_first_batches``).
    """

    def __init__(self, lengths: Sequence[float], batch_size: int, seed: int = 0, bucket_batches: int = 50,
                 drop_last: bool = False):
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.bucket = batch_size * bucket_batches
        self.drop_last, self.epoch = drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(hash((self.seed, self.epoch)))
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], rng.random()))
        batches = []
        for start in range(0, len(order), self.bucket):
            bucket = order[start:start + self.bucket]
            rng.shuffle(bucket)
            batches += [bucket[i:i + self.batch_size] for i in range(0, len(bucket), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        n = len(self.lengths)
        if not self.drop_last:
            return sum(math.ceil(min(self.bucket, n - s) / self.batch_size) for s in range(0, n, self.bucket))
        return sum(min(self.bucket, n - s) // self.batch_size for s in range(0, n, self.bucket))


def mixture(parts: Sequence[datasets.Dataset], weights: Sequence[float] | None = None, seed: int = 0
            ) -> datasets.Dataset:
    """Mix datasets by sampling weights (each part sampled with probability ∝ its weight until all are used)."""
    if len(parts) == 1:
        return parts[0]
    probabilities = None
    if weights is not None:
        total = float(sum(weights))
        probabilities = [w / total for w in weights]
    return datasets.interleave_datasets(list(parts), probabilities=probabilities, seed=seed,
                                        stopping_strategy="all_exhausted")
