"""Manifest rows to training examples, decoded in DataLoader workers with seeded crops, and their collation."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import datasets
import torch

from pengi.audio import ClipLoader
from pengi.errors import PengiInputError

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
        # In shared memory: persistent DataLoader workers hold their own copy of the dataset, and must still see
        # the epoch the main process sets (it seeds the training crops).
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        return decode_example(self.rows[index], index, self.processor, self.train, self.seed, self.epoch)


class StreamingAudioTextDataset(torch.utils.data.IterableDataset):
    """Training batches from a streamed manifest (`load_manifest(..., streaming=True)`), decoded in the DataLoader
    workers as rows come, never all in memory. Use it with ``DataLoader(batch_size=None)``: it yields whole
    batches (lists of examples; a row that cannot be read is None, dropped by the collator).

    Batch ``j`` is always rows ``j * batch_size`` to ``(j + 1) * batch_size - 1`` of the stream. ``skip_batches``
    passes over the first batches without decoding them, so a resumed run continues exactly where it stopped
    (`datasets`' own ``skip`` changes the order of a shuffled stream). The rest are dealt to the workers in turn,
    the first to worker 0, as the DataLoader takes the workers' batches in turn: the batches come in stream order
    and are the same for any number of workers. The last partial batch is dropped."""

    def __init__(self, rows: datasets.IterableDataset, processor: ClipLoader, batch_size: int, seed: int = 0,
                 skip_batches: int = 0):
        self.rows, self.processor, self.batch_size, self.seed = rows, processor, batch_size, seed
        self.skip_batches = skip_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[dict[str, Any] | None]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # `iter` reads the whole stream in every worker (iterating the dataset itself would shard it by file).
        for j, columns in enumerate(self.rows.iter(batch_size=self.batch_size, drop_last_batch=True)):
            if j < self.skip_batches or (j - self.skip_batches) % workers != worker:
                continue
            rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
            yield [decode_example(row, j * self.batch_size + i, self.processor, True, self.seed, self.epoch)
                   for i, row in enumerate(rows)]
