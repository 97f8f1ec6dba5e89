"""Manifest rows to training batches: decoding in DataLoader workers, seeded crops, duration buckets, mixtures."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import datasets
import soundfile as sf
import torch

from ..audio import ClipLoader
from ..errors import PengiInputError
from ..processing_clap import CLAPProcessor
from ..processing_pengi import PengiProcessor
from ..processing_slap import SLAPProcessor

log = logging.getLogger("pengi")


def decode_example(row: Mapping[str, Any], index: int, processor: ClipLoader, train: bool, seed: int,
                   epoch: int) -> dict[str, Any] | None:
    """Decode, resample and fit one manifest row's audio; None (and a log line) when it cannot be read.

    Training crops of long clips are random but seeded by ``(seed, epoch, index)``, so a resumed run sees the
    same crops; evaluation uses the model's deterministic policy.
    """
    try:
        wave = processor.load(row["audio"], offset=row.get("offset") or 0.0, duration=row.get("duration"))
    except PengiInputError as err:
        log.warning("skipping example %d: %s", index, err)
        return None
    if train:
        generator = torch.Generator().manual_seed(hash((seed, epoch, index)) % 2**63)
        wave = processor.clip(wave, crop="random", generator=generator)
    else:
        wave = processor.clip(wave)
    return {"waveform": wave, "prompt": row["prompt"], "answer": row["answer"]}


class AudioTextDataset(torch.utils.data.Dataset):
    """Manifest rows decoded in the DataLoader worker that loads them (see `decode_example`).

    A row whose audio cannot be read is dropped from its batch by `PengiCollator`, never fatal.
    """

    def __init__(self, rows: datasets.Dataset, processor: ClipLoader, train: bool = True, seed: int = 0):
        self.rows, self.processor, self.train, self.seed = rows, processor, train, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        return decode_example(self.rows[index], index, self.processor, self.train, self.seed, self.epoch)


class StreamingAudioTextDataset(torch.utils.data.IterableDataset):
    """Training examples from a streamed manifest (`load_manifest(..., streaming=True)`): rows are read as they
    come and decoded in the DataLoader workers (worker k of n takes every n-th row), never all in memory.
    ``skip_rows`` passes over the first rows of the pass without decoding them: a resumed run continues the
    same shuffled order (`datasets`' own ``skip`` changes the order of a shuffled stream); exact when every
    skipped row decoded, since rows that fail are counted but yield no example."""

    def __init__(self, rows: datasets.IterableDataset, processor: ClipLoader, seed: int = 0, skip_rows: int = 0):
        self.rows, self.processor, self.seed, self.skip_rows = rows, processor, seed, skip_rows
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for n, row in enumerate(self.rows):
            if n >= self.skip_rows and n % workers == worker:
                item = decode_example(row, n, self.processor, True, self.seed, self.epoch)
                if item is not None:
                    yield item


class PengiCollator:
    """Batch waveforms and tokenize prompts and answers with the model's processor; drops unreadable rows."""

    def __init__(self, processor: PengiProcessor):
        self.processor = processor

    def texts(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {**self.processor.prompts([x["prompt"] for x in items]),
                **self.processor.answers([x["answer"] for x in items])}

    def __call__(self, items: Sequence[dict[str, Any] | None]) -> dict[str, torch.Tensor]:
        items = [x for x in items if x is not None]
        if not items:
            return {}
        # + waveform_lengths for a variable-length (SLAP) tower
        return {**self.processor.batch([x["waveform"] for x in items]), **self.texts(items)}


class CLAPCollator(PengiCollator):
    """Stack waveforms and tokenize the texts (each row's ``answer``) for `CLAP`; drops unreadable rows."""

    def __init__(self, processor: CLAPProcessor):
        self.processor = processor

    def texts(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.processor.texts([x["answer"] for x in items])


class SLAPCollator(PengiCollator):
    """Right-pad clips (with ``waveform_lengths``) and tokenize each row's answer, its caption, for the text
    encoder and for the caption decoder (`SLAPProcessor`); drops unreadable rows."""

    def __init__(self, processor: SLAPProcessor):
        self.processor = processor

    def texts(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        texts = [x["answer"] for x in items]
        return {**self.processor.texts(texts), **self.processor.captions(texts)}


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
    `skip_next` drops the first batches of the next pass, so a resumed run continues an epoch where it
    stopped with the same iterator count as an uninterrupted one.
    """

    def __init__(self, lengths: Sequence[float], batch_size: int, seed: int = 0, bucket_batches: int = 50,
                 drop_last: bool = False):
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.bucket = batch_size * bucket_batches
        self.drop_last, self.epoch, self._skip = drop_last, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_next(self, batches: int) -> None:
        self._skip = batches

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
        skip, self._skip = self._skip, 0
        return iter(batches[skip:])

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
