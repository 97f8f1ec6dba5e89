"""Generation over many clips, as `pengi caption`, `ask` and `describe` run it (locally or on Ray): how a job's
audio is loaded, and how a batch of loaded jobs becomes result rows.

Rows: ``{"audio", "prompt", "text"}`` per clip; in window mode one per window, with ``start``/``end`` (seconds),
``window`` and ``windows``; with ``fields`` (describe) ``{"audio", <field>: text, ...}``; an input that cannot be
read gives ``{"audio", "prompt", "error"}``. Rows come out in input order.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from pengi.audio import Window
from pengi.batch.inputs import Job
from pengi.errors import PengiInputError

log = logging.getLogger("pengi")

CLIP_FIELDS = ["audio", "prompt", "text", "error"]
WINDOW_FIELDS = ["audio", "prompt", "start", "end", "window", "windows", "text", "error"]


@dataclass(frozen=True)
class Loaded:
    """A job's audio, ready for the model: one clip fitted to the model's window, or a recording's windows.
    ``seconds`` is the recording's length (to tell when a clip was cropped)."""

    clip: torch.Tensor | None
    windows: list[Window] | None
    seconds: float


@dataclass
class GenerationTask:
    """What to generate for each job: its prompt (or, with ``fields``, one prompt per output field), over the
    whole clip or window by window (``hop`` seconds apart), with the decoding options of `Pengi.generate`.

    With sampling and a ``seed``, each clip is decoded on its own with a seed made from ``seed`` and the clip,
    so its answer depends on nothing else (not on the batch it falls in, nor on the run's order).
    """

    windows: bool = False
    hop: float | None = None
    decoding: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    fields: dict[str, str] | None = None

    @property
    def result_fields(self) -> list[str]:
        if self.fields:
            return ["audio", *self.fields, "error"]
        return WINDOW_FIELDS if self.windows else CLIP_FIELDS

    def load(self, processor: Any, job: Job) -> Loaded:
        """Decode and resample ``job``'s audio and fit it to the model (raises `PengiInputError`)."""
        if not self.fields:
            processor.check_prompts([job.prompt], names=[f"prompt of {job.audio}"])
        wave = processor.load(job.audio)
        seconds = wave.shape[-1] / processor.sample_rate
        if self.windows:
            return Loaded(None, processor.windows(wave, self.hop), seconds)
        return Loaded(processor.clip(wave), None, seconds)

    def rows(self, model: Any, loaded: list[tuple[Job, Loaded | PengiInputError]]) -> list[dict[str, Any]]:
        """Generate for the readable jobs of a batch; the others become error rows."""
        waves, prompts, keys = [], [], []
        for job, item in loaded:
            if isinstance(item, PengiInputError):
                continue
            clips = [(w.wave, f"{job.audio}@{w.start:g}") for w in item.windows] if self.windows \
                else [(item.clip, job.audio)]
            for prompt in (self.fields.values() if self.fields else [job.prompt]):
                waves += [wave for wave, _ in clips]
                prompts += [prompt] * len(clips)
                keys += [f"{key}\n{prompt}" for _, key in clips]
        texts = iter(self.generate(model, waves, prompts, keys) if waves else [])
        rows: list[dict[str, Any]] = []
        for job, item in loaded:
            head = {"audio": job.audio} if self.fields else {"audio": job.audio, "prompt": job.prompt}
            if isinstance(item, PengiInputError):
                rows.append({**head, "error": item.problem})
            elif self.fields:
                rows.append({**head, **{name: next(texts) for name in self.fields}})
            elif self.windows:
                rows += [{**head, "start": round(w.start, 3), "end": round(w.end, 3), "window": n,
                          "windows": len(item.windows), "text": next(texts)} for n, w in enumerate(item.windows)]
            else:
                rows.append({**head, "text": next(texts)})
        return rows

    def generate(self, model: Any, waves: list[torch.Tensor], prompts: list[str], keys: list[str]) -> list[str]:
        if not (self.decoding.get("do_sample") and self.seed is not None):
            return model.generate_from_waveforms(waves, prompts, generate_kwargs=self.decoding)
        texts = []
        for wave, prompt, key in zip(waves, prompts, keys):
            with seeded(clip_seed(self.seed, key), model.device):
                texts += model.generate_from_waveforms([wave], [prompt], generate_kwargs=self.decoding)
        return texts


def clip_seed(seed: int, key: str) -> int:
    """A seed for one clip from the run's ``seed`` and the clip's identity."""
    digest = hashlib.sha256(f"{seed}\n{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run under ``torch.manual_seed(seed)``, and give back the random state found (the CPU's, and ``device``'s
    when it is a GPU), so that a seeded call changes nothing for the calls after it."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class CropNotice:
    """Says once per run that clips longer than the model's window were cropped, then how many at the end."""

    def __init__(self, window_seconds: float, policy: str):
        self.window, self.policy, self.count = window_seconds, policy, 0

    def inspect(self, job: Job, item: Any) -> float | None:
        """The recording's length if it was cropped to the window, else None (runs where the audio is loaded)."""
        if isinstance(item, Loaded) and item.clip is not None and item.seconds > self.window + 1e-6:
            return item.seconds
        return None

    def record(self, job: Job, seconds: float | None) -> None:
        if seconds is None:
            return
        if self.count == 0:
            log.warning("%s is %.1f s long, longer than the model's %.1f s window: only its %s %.1f s were used "
                        "(use --windows to cover whole recordings)", job.audio, seconds, self.window,
                        "central" if self.policy == "center" else "first", self.window)
        self.count += 1

    def summary(self) -> None:
        if self.count > 1:
            log.warning("%d clips were longer than the model's %.1f s window and were cropped (see --windows)",
                        self.count, self.window)
