"""Embedding many clips with a contrastive model (CLAP, SLAP), as `pengi embed` and `pengi zero-shot` run it:
loading each job's audio, embedding a batch, and an embedding index as the job's writer."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch

from pengi.batch.inputs import Job
from pengi.errors import PengiInputError
from pengi.models.clap.embedding_index import EmbeddingIndex

log = logging.getLogger("pengi")
SAVE_EVERY_S = 60.0  # the index is rewritten this often, so that a killed run loses little


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
    """An `EmbeddingIndex` file as a job's writer: a clip in it is done; new embeddings are added and the index
    saved every `SAVE_EVERY_S` seconds and on `close` (error rows are only counted: the index holds embeddings)."""

    def __init__(self, path: str, model_id: str):
        self.path = path
        self.index = EmbeddingIndex(model_id)
        if os.path.exists(path):
            self.index = EmbeddingIndex.load(path)
            if self.index.model != model_id:
                raise PengiInputError(path, f"was made with the model {self.index.model}, not {model_id}; "
                                            "write to another file")
        self._done = set(self.index.paths)
        self._saved_at = time.monotonic()

    def done(self, job: Job) -> bool:
        return job.audio in self._done

    def write(self, rows: list[dict[str, Any]]) -> None:
        good = [row for row in rows if "embedding" in row and row["audio"] not in self._done]
        if good:
            self.index.add([row["audio"] for row in good], torch.stack([row["embedding"] for row in good]))
            self._done.update(row["audio"] for row in good)
        if time.monotonic() - self._saved_at > SAVE_EVERY_S:
            self.save()

    def save(self) -> None:
        if len(self.index):
            self.index.save(self.path)
        self._saved_at = time.monotonic()

    def close(self) -> None:
        self.save()
