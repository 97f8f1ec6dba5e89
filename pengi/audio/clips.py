"""Clips: fit a decoded recording to a model's window, or cut a long one into windows.

`ClipLoader` is the audio half of every processor, so all models read, mix, crop and pad audio the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pengi.audio.decode import AudioSource, describe_source, load_audio


def fit_length(wave: torch.Tensor, length: int, *, crop: str = "center",
               generator: torch.Generator | None = None, pad: str = "repeat") -> torch.Tensor:
    """Fit a 1-D clip to exactly ``length`` samples.

    Short clips are repeated end to end (``pad="repeat"``, as Pengi and msclap do), repeated as many whole
    times as fit and then followed by silence (``pad="repeatpad"``, as LAION-CLAP's feature extractor does),
    followed by silence (``pad="zeros"``) or kept as they are (``pad="none"``: ``length`` is then only a
    maximum). Long clips are cropped: by default the central window, so the same audio always gives the same
    output. ``crop="random"`` draws the window from ``generator`` (the published code's behaviour, and CLAP's
    training augmentation; pass a seeded generator to make it repeatable) and ``crop="start"`` keeps the beginning.
    """
    n = wave.shape[-1]
    if n < length:
        if pad == "none":
            return wave
        if pad == "repeatpad":
            wave = wave.repeat(length // n)
            pad, n = "zeros", wave.shape[-1]
        if pad == "zeros":
            return torch.cat([wave, wave.new_zeros(length - n)])
        if pad != "repeat":
            raise ValueError(f"pad must be 'repeat', 'repeatpad', 'zeros' or 'none', got {pad!r}")
        return wave.repeat(math.ceil(length / n))[:length]
    if n == length:
        return wave
    if crop == "center":
        start = (n - length) // 2
    elif crop == "start":
        start = 0
    elif crop == "random":
        start = int(torch.randint(0, n - length + 1, (1,), generator=generator))
    else:
        raise ValueError(f"crop must be 'center', 'start' or 'random', got {crop!r}")
    return wave[start:start + length]


@dataclass(frozen=True)
class Window:
    """One window of a long recording, with its position in seconds."""

    start: float
    end: float
    wave: torch.Tensor


def split_windows(wave: torch.Tensor, sample_rate: int, window: int, hop: int | None = None) -> list[Window]:
    """Cut a recording into consecutive windows of ``window`` samples, ``hop`` apart (default: no overlap).

    Every sample is covered; the last window may be shorter than ``window`` and is then repeat-padded
    by `fit_length`. A recording shorter than one window gives one window.
    """
    hop = hop or window
    if hop <= 0 or window <= 0:
        raise ValueError("window and hop must be positive")
    n = wave.shape[-1]
    starts = range(0, max(n - window, 0) + hop, hop) if n > window else [0]
    out = []
    for s in starts:
        if s >= n:
            break
        e = min(s + window, n)
        out.append(Window(s / sample_rate, e / sample_rate, fit_length(wave[s:e], window)))
    return out


class ClipLoader:
    """Loads any `AudioSource` as mono audio at a model's sample rate and fits it to the model's clip length.

    The audio half of every processor (`PengiProcessor`, `CLAPProcessor`, `SLAPProcessor`), so all models read,
    mix, crop and pad audio the same way. With ``pad="none"`` (variable-length towers) ``clip_samples`` is only
    a maximum: shorter clips are kept whole and batches are right-padded with their lengths alongside.
    """

    def __init__(self, sample_rate: int, clip_samples: int, *, mix: str = "mean", crop: str = "center",
                 pad: str = "repeat", generator: torch.Generator | None = None):
        self.sample_rate, self.clip_samples = sample_rate, clip_samples
        self._mix, self._crop, self._pad, self._generator = mix, crop, pad, generator

    def load(self, source: AudioSource, name: str | None = None, offset: float = 0.0,
             duration: float | None = None) -> torch.Tensor:
        """A recording (or its excerpt from ``offset`` for ``duration`` seconds) as mono float32 at the model's
        sample rate, its channels mixed as the model expects."""
        return load_audio(source, self.sample_rate, name=name, mix=self._mix, offset=offset, duration=duration)

    @property
    def crops_at_random(self) -> bool:
        """Whether long clips are cropped at random (a release's behaviour): then the crop depends on the order
        clips are loaded in, not only on the clip."""
        return self._crop == "random"

    @property
    def variable_length(self) -> bool:
        return self._pad == "none"

    def clip(self, wave: torch.Tensor, crop: str | None = None, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        """Fit a recording to the model's clip length (pad short ones, crop long ones by the policy, or by
        ``crop`` with ``generator`` when given: training's random crops)."""
        return fit_length(wave, self.clip_samples, crop=crop or self._crop, generator=generator or self._generator,
                          pad=self._pad)

    def batch(self, waves: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fitted clips as model inputs: ``waveforms`` ``(batch, samples)``, and for variable-length models
        ``waveform_lengths`` ``(batch,)`` with the clips right-padded with zeros."""
        if not self.variable_length:
            return {"waveforms": torch.stack(waves)}
        lengths = torch.tensor([w.shape[-1] for w in waves])
        padded = waves[0].new_zeros(len(waves), int(lengths.max()))
        for row, w in zip(padded, waves):
            row[:w.shape[-1]] = w
        return {"waveforms": padded, "waveform_lengths": lengths}

    def windows(self, wave: torch.Tensor, hop_seconds: float | None = None) -> list[Window]:
        """Consecutive clip-length windows of a long recording, each with its start and end in seconds."""
        hop = None if hop_seconds is None else int(round(hop_seconds * self.sample_rate))
        return split_windows(wave, self.sample_rate, self.clip_samples, hop)

    def waveforms(self, sources: list[AudioSource]) -> torch.Tensor:
        """Load and fit a batch of sources into ``(batch, clip_samples)``."""
        return torch.stack([self.clip(self.load(s, describe_source(s, i))) for i, s in enumerate(sources)])

    def audio(self, sources: list[AudioSource]) -> dict[str, torch.Tensor]:
        """Load and fit a batch of sources into model inputs (see `batch`)."""
        return self.batch([self.clip(self.load(s, describe_source(s, i))) for i, s in enumerate(sources)])
