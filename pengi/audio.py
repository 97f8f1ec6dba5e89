"""Audio input: decode, check, downmix, resample and fit clips to the model's window.

Everything a user can hand to a model (a path, an array with its sample rate, a `datasets` audio dict)
goes through `load_audio`, so every entry point accepts the same inputs and fails with the same clear
errors. Files are decoded with soundfile (wav, flac, ogg, mp3, ...), never with a codec that needs FFmpeg.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from .errors import PengiInputError

AudioSource = Union[str, os.PathLike, tuple[Any, int], Mapping[str, Any]]
"""A path, an ``(array, sample_rate)`` pair, or a ``{"array": ..., "sampling_rate": ...}`` dict."""

MAX_CHANNELS = 32


def describe_source(source: AudioSource, index: int | None = None) -> str:
    """A short name for an input, used in error messages and output rows."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, Mapping) and source.get("path"):
        return str(source["path"])
    return "array" if index is None else f"array #{index}"


def load_audio(source: AudioSource, sample_rate: int, *, name: str | None = None, mix: str = "mean",
               offset: float = 0.0, duration: float | None = None) -> torch.Tensor:
    """Return ``source`` as a 1-D float32 tensor at ``sample_rate`` Hz.

    ``offset`` and ``duration`` (seconds) select an excerpt; for files only that part is decoded.
    Multi-channel audio is averaged to mono (``mix="mean"``); ``mix="concat"`` puts the channels end to end,
    which is what the published Pengi code did and is kept only for reproducing it.
    Raises `PengiInputError` naming the input for anything that is not usable audio.
    """
    name = name or describe_source(source)
    if isinstance(source, (str, os.PathLike)):
        wave, sr = _read_file(os.fspath(source), offset, duration)
        offset, duration = 0.0, None
    elif isinstance(source, Mapping):
        if "array" not in source or "sampling_rate" not in source:
            raise PengiInputError(name, "an audio dict needs 'array' and 'sampling_rate' keys")
        wave, sr = _as_channels_first(source["array"], name), source["sampling_rate"]
    elif isinstance(source, tuple) and len(source) == 2:
        wave, sr = _as_channels_first(source[0], name), source[1]
    else:
        raise PengiInputError(name, f"unsupported audio input of type {type(source).__name__}; "
                              "give a file path, an (array, sample_rate) pair or a datasets audio dict")
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise PengiInputError(name, f"sample rate must be a positive integer, got {sr!r}")
    if offset or duration is not None:
        start = int(round(offset * sr))
        wave = wave[:, start:] if duration is None else wave[:, start:start + int(round(duration * sr))]
    if wave.shape[-1] == 0:
        raise PengiInputError(name, "contains no audio samples (zero length)")
    if not torch.isfinite(wave).all():
        bad = int((~torch.isfinite(wave)).sum())
        raise PengiInputError(name, f"contains {bad} NaN or infinite samples")
    if mix == "mean":
        wave = wave.mean(dim=0)
    elif mix == "concat":
        wave = wave.reshape(-1)
    else:
        raise ValueError(f"mix must be 'mean' or 'concat', got {mix!r}")
    if int(sr) != sample_rate:
        wave = _resampler(int(sr), sample_rate)(wave)
    return wave.contiguous()


def _read_file(path: str, offset: float = 0.0, duration: float | None = None) -> tuple[torch.Tensor, int]:
    if not os.path.exists(path):
        raise PengiInputError(path, "file not found")
    if os.path.isdir(path):
        raise PengiInputError(path, "is a directory, not an audio file")
    if os.path.getsize(path) == 0:
        raise PengiInputError(path, "file is empty (0 bytes)")
    try:
        with sf.SoundFile(path) as f:
            sr = f.samplerate
            start = int(round(offset * sr))
            if start:
                f.seek(min(start, f.frames))
            frames = -1 if duration is None else int(round(duration * sr))
            data = f.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        ext = os.path.splitext(path)[1].lower() or "(no extension)"
        if ext.lstrip(".").upper() not in sf.available_formats() and ext != ".mp3":
            raise PengiInputError(path, f"unsupported audio format {ext}; readable formats: wav, flac, ogg, mp3, "
                                  "aiff and the others libsndfile decodes") from None
        raise PengiInputError(path, f"cannot decode audio (corrupt or truncated file?): {err}") from None
    return torch.from_numpy(np.ascontiguousarray(data.T)), sr


def _as_channels_first(array: Any, name: str) -> torch.Tensor:
    """Accept 1-D ``(samples,)`` or 2-D ``(channels, samples)`` numpy arrays and tensors."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        if not (array.is_floating_point() or array.dtype in (torch.int16, torch.int32, torch.int8, torch.uint8)):
            raise PengiInputError(name, f"audio tensor has unsupported dtype {array.dtype}")
        array = array.numpy()
    try:
        array = np.asarray(array)
    except Exception as err:  # ragged lists and other junk
        raise PengiInputError(name, f"cannot turn the audio into an array: {err}") from None
    if np.issubdtype(array.dtype, np.integer):
        scale = float(np.iinfo(array.dtype).max) + 1.0
        array = array.astype(np.float32) / scale
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    else:
        raise PengiInputError(name, f"audio array has unsupported dtype {array.dtype}")
    if array.ndim == 1:
        array = array[None, :]
    elif array.ndim != 2:
        raise PengiInputError(name, f"audio array must be 1-D (samples,) or 2-D (channels, samples), "
                              f"got shape {tuple(array.shape)}")
    if array.shape[0] > MAX_CHANNELS:
        raise PengiInputError(name, f"audio array of shape {tuple(array.shape)} has {array.shape[0]} channels; "
                              "arrays are (channels, samples): transpose a (samples, channels) array first")
    return torch.from_numpy(np.ascontiguousarray(array))


@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int):
    g = math.gcd(orig, new)
    return functools.partial(AF.resample, orig_freq=orig // g, new_freq=new // g)


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
