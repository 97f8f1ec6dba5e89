"""Embedding many clips with a contrastive model (CLAP, SLAP), as `pengi embed` and `pengi zero-shot` run it:
loading each job's audio, embedding a batch, and an embedding index as the job's writer."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import torch

from pengi.batch.inputs import Job
from pengi.errors import PengiInputError
from pengi.models.clap.embedding_index import EmbeddingIndex, read_paths, read_shards, shard_file, write_shards

log = logging.getLogger("pengi")
SAVE_EVERY_S = 60.0  # the index's last file is rewritten this often, so that a killed run loses little
ROWS_PER_FILE = 50_000  # rows per file of a sharded index (200 MB at 1024 dimensions)


def load_clip(processor: Any, job: Job) -> torch.Tensor:
    """``job``'s audio fitted to the model (raises `PengiInputError`)."""
    return processor.clip(processor.load(job.audio))


def embed_batch(model: Any, loaded: list[tuple[Job, Any]]) -> list[tuple[Job, torch.Tensor | PengiInputError]]:
    """Each job with its clip's L2-normalised embedding (float32, CPU), or the error that kept it from loading."""
    waves = [item for _, item in loaded if not isinstance(item, PengiInputError)]
    embeds = iter([])
    if waves:
        with torch.inference_mode():
            embeds = iter(model.audio_embedding(**model.processor.batch(waves)).float().cpu())
    return [(job, item if isinstance(item, PengiInputError) else next(embeds)) for job, item in loaded]


def embedding_rows(model: Any, loaded: list[tuple[Job, Any]]) -> list[dict[str, Any]]:
    """`embed_batch` as rows: ``{"audio", "embedding"}``, or ``{"audio", "error"}``."""
    return [{"audio": job.audio, "error": e.problem} if isinstance(e, PengiInputError) else
            {"audio": job.audio, "embedding": e} for job, e in embed_batch(model, loaded)]


class IndexWriter:
    """An embedding index as a job's writer: a clip in it is done; new embeddings are added to its last file,
    saved every `SAVE_EVERY_S` seconds and on `close` (error rows are only counted: the index holds embeddings).

    The index is sharded once it outgrows ``rows_per_file`` rows: a full file is saved a last time and never
    rewritten, a new one is started, and ``NAME.shards.json`` lists them (written after each new file), so a
    run never rewrites more than one file and a killed run loses at most the last file's unsaved rows.
    """

    def __init__(self, path: str, model_id: str, rows_per_file: int = ROWS_PER_FILE):
        self.path, self.model_id, self.rows_per_file = path, model_id, rows_per_file
        sharded = read_shards(path)
        self.files = sharded[1] if sharded else ([path] if os.path.exists(path) else [])
        found = sharded[0] if sharded else (EmbeddingIndex.load(path).model if self.files else model_id)
        if found != model_id:
            raise PengiInputError(path, f"was made with the model {found}, not {model_id}; write to another file")
        self._done = {p for file in self.files[:-1] for p in read_paths(file)}
        if self.files:
            self.index = EmbeddingIndex.load(self.files[-1])  # the last file takes the new rows
            self._done.update(self.index.paths)
        else:
            self.files, self.index = [path], EmbeddingIndex(model_id)
        self._saved_at = time.monotonic()

    def done(self, job: Job) -> bool:
        return job.audio in self._done

    def __len__(self) -> int:
        return len(self._done)

    def write(self, rows: list[dict[str, Any]]) -> None:
        good = [row for row in rows if "embedding" in row and row["audio"] not in self._done]
        while good:
            if len(self.index) >= self.rows_per_file:
                self._start_file()
            chunk, good = good[:self.rows_per_file - len(self.index)], good[self.rows_per_file - len(self.index):]
            self.index.add([row["audio"] for row in chunk], torch.stack([row["embedding"] for row in chunk]))
            self._done.update(row["audio"] for row in chunk)
        if time.monotonic() - self._saved_at > SAVE_EVERY_S:
            self.save()

    def reorder(self, keys: Sequence[tuple[str, str]]) -> None:
        """Put a one-file index in the order of ``keys`` (after clips they do not name), as the local engine
        writes it; a sharded index keeps the order its clips finished in."""
        if len(self.files) > 1 or not len(self.index):
            return
        position = {audio: n for n, (audio, _) in enumerate(keys)}
        order = sorted(range(len(self.index)), key=lambda i: (self.index.paths[i] in position,
                                                              position.get(self.index.paths[i], i)))
        if order != list(range(len(self.index))):
            self.index = EmbeddingIndex(self.index.model, [self.index.paths[i] for i in order],
                                        self.index.embeddings[order])
            self.save()

    def save(self) -> None:
        if len(self.index):
            self.index.save(self.files[-1])
            if len(self.files) > 1:
                write_shards(self.path, self.model_id, self.files)
        self._saved_at = time.monotonic()

    def _start_file(self) -> None:
        self.save()
        self.files.append(shard_file(self.path, len(self.files) + 1))
        self.index = EmbeddingIndex(self.model_id)

    def close(self) -> None:
        self.save()

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
