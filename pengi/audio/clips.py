"""Clips: fit a decoded recording to a model's window, or cut a long one into windows.

`AudioClipFeatureExtractor` (`pengi.audio.feature_extraction`) applies these with a model's settings; `ClipLoader`
names what the data pipeline needs of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from pengi.audio.decode import AudioSource

CROP_POLICIES = ("center", "start", "random")
PAD_POLICIES = ("repeat", "repeatpad", "zeros", "none")


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


class ClipLoader(Protocol):
    """What the data pipeline needs of the audio half of a model: `AudioClipFeatureExtractor`
    (`pengi.audio.feature_extraction`) implements it, and every processor hands these calls to its feature extractor."""

    sample_rate: int
    clip_samples: int

    def load(self, source: AudioSource, name: str | None = None, offset: float = 0.0,
             duration: float | None = None) -> torch.Tensor: ...

    @property
    def crops_at_random(self) -> bool:
        """Whether long clips are cropped at random (a release's behaviour): then the crop depends on the order
        clips are loaded in, not only on the clip."""
        ...

    def clip(self, wave: torch.Tensor, crop: str | None = None, generator: torch.Generator | None = None
             ) -> torch.Tensor: ...

    def batch(self, waves: list[torch.Tensor]) -> dict[str, torch.Tensor]: ...
