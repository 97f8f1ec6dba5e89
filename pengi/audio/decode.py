"""Audio input: decode, check, downmix and resample any source a user can give to mono float32.

Everything a user can hand to a model (a path, an array with its sample rate, a `datasets` audio dict)
goes through `load_audio`, so every entry point accepts the same inputs and fails with the same clear
errors. Files are decoded with soundfile (wav, flac, ogg, mp3, ...), never with a codec that needs FFmpeg.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from typing import Any, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from pengi.errors import PengiInputError

AudioSource = Union[str, os.PathLike, tuple[Any, int], Mapping[str, Any]]
"""A path, an ``(array, sample_rate)`` pair, or a ``{"array": ..., "sampling_rate": ...}`` dict."""

MAX_CHANNELS = 32
MIX_MODES = ("mean", "concat")


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
