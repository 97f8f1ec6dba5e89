"""`AudioClipFeatureExtractor`: a model's waveform settings as a transformers feature extractor.

It is the audio half of every processor (`PengiProcessor`, `CLAPProcessor`, `SLAPProcessor`), so all models read,
mix, crop and pad audio the same way, and what transformers' pipelines and `AutoFeatureExtractor` see. It decodes,
mixes and resamples with `pengi.audio.decode` and fits clips with `pengi.audio.clips`; it holds settings, not code
of its own. The log-mel front end stays inside the models (it runs on the model's device).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, SequenceFeatureExtractor

from pengi.audio.clips import CROP_POLICIES, PAD_POLICIES, Window, fit_length, split_windows
from pengi.audio.decode import MIX_MODES, AudioSource, describe_source, load_audio
from pengi.errors import PengiInputError

log = logging.getLogger("pengi")


class AudioClipFeatureExtractor(SequenceFeatureExtractor):
    """Any audio to a model's input: mono float32 at ``sampling_rate``, fitted to ``clip_samples``.

    Settings (saved by `save_pretrained` as ``preprocessor_config.json``, or inside a processor's
    ``processor_config.json``):
        sampling_rate: the model's sample rate; other rates are resampled.
        clip_samples: the model's window. With ``pad="none"`` (variable-length towers) only a maximum.
        mix: ``"mean"`` averages channels; ``"concat"`` puts them end to end (the published Pengi and msclap code).
        crop: long clips keep their ``"center"`` (the same audio always gives the same output), their ``"start"``,
            or a ``"random"`` window (drawn from a generator seeded by ``crop_seed``, else torch's global one).
        pad: short clips are repeated (``"repeat"``), repeated whole then followed by silence (``"repeatpad"``),
            followed by silence (``"zeros"``) or kept as they are (``"none"``; batches are then right-padded with
            zeros and ``waveform_lengths`` is returned beside ``waveforms``).
    """

    def __init__(self, sampling_rate: int = 16000, clip_samples: int = 16000, mix: str = "mean",
                 crop: str = "center", pad: str = "repeat", crop_seed: int | None = None, feature_size: int = 1,
                 padding_value: float = 0.0, **kwargs: Any):
        kwargs.setdefault("return_attention_mask", False)
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value,
                         **kwargs)
        for name, value, allowed in (("mix", mix, MIX_MODES), ("crop", crop, CROP_POLICIES),
                                     ("pad", pad, PAD_POLICIES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        for name, value in (("sampling_rate", sampling_rate), ("clip_samples", clip_samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.clip_samples, self.mix, self.crop, self.pad, self.crop_seed = clip_samples, mix, crop, pad, crop_seed
        self._generator = None if crop_seed is None else torch.Generator().manual_seed(crop_seed)

    # ------------------------------------------------------------------ settings
    @property
    def sample_rate(self) -> int:
        """``sampling_rate`` under the name pengi's configs use."""
        return self.sampling_rate

    @property
    def variable_length(self) -> bool:
        """Whether clips are kept whole (up to ``clip_samples``) instead of fitted to the window."""
        return self.pad == "none"

    @property
    def crops_at_random(self) -> bool:
        """Whether long clips are cropped at random (a release's behaviour): the crop then depends on the order
        clips are loaded in, not only on the clip."""
        return self.crop == "random"

    @property
    def model_input_names(self) -> list[str]:
        return ["waveforms", "waveform_lengths"] if self.variable_length else ["waveforms"]

    def settings(self) -> dict[str, Any]:
        """What decides the output: equal settings give equal outputs."""
        return {k: getattr(self, k) for k in ("sampling_rate", "clip_samples", "mix", "crop", "pad", "crop_seed")}

    def to_dict(self) -> dict[str, Any]:
        # The crop generator is state, not a setting: it is rebuilt from crop_seed.
        out = {k: copy.deepcopy(v) for k, v in self.__dict__.items() if not k.startswith("_")}
        out["feature_extractor_type"] = type(self).__name__
        return out

    # ------------------------------------------------------------------ one recording at a time
    def load(self, source: AudioSource, name: str | None = None, offset: float = 0.0,
             duration: float | None = None) -> torch.Tensor:
        """A recording (or its excerpt from ``offset`` for ``duration`` seconds) as mono float32 at the model's
        sample rate, its channels mixed as the model expects."""
        return load_audio(source, self.sampling_rate, name=name, mix=self.mix, offset=offset, duration=duration)

    def clip(self, wave: torch.Tensor, crop: str | None = None, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        """Fit a recording to the model's clip length (pad short ones, crop long ones by the policy, or by
        ``crop`` with ``generator`` when given: training's random crops)."""
        return fit_length(wave, self.clip_samples, crop=crop or self.crop, generator=generator or self._generator,
                          pad=self.pad)

    def windows(self, wave: torch.Tensor, hop_seconds: float | None = None) -> list[Window]:
        """Consecutive clip-length windows of a long recording, each with its start and end in seconds."""
        hop = None if hop_seconds is None else int(round(hop_seconds * self.sampling_rate))
        return split_windows(wave, self.sampling_rate, self.clip_samples, hop)

    # ------------------------------------------------------------------ batches
    def batch(self, waves: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fitted clips as model inputs: ``waveforms`` ``(batch, samples)``, and for variable-length models
        ``waveform_lengths`` ``(batch,)`` with the clips right-padded with ``padding_value``."""
        if not self.variable_length:
            return {"waveforms": torch.stack(waves)}
        lengths = torch.tensor([w.shape[-1] for w in waves])
        padded = waves[0].new_full((len(waves), int(lengths.max())), self.padding_value)
        for row, w in zip(padded, waves):
            row[:w.shape[-1]] = w
        return {"waveforms": padded, "waveform_lengths": lengths}

    def waveforms(self, sources: list[AudioSource]) -> torch.Tensor:
        """Load and fit a batch of sources into ``(batch, clip_samples)``."""
        return torch.stack(self._fitted(sources))

    def audio(self, sources: list[AudioSource]) -> dict[str, torch.Tensor]:
        """Load and fit a batch of sources into model inputs (see `batch`)."""
        return self.batch(self._fitted(sources))

    def _fitted(self, sources: list[AudioSource]) -> list[torch.Tensor]:
        return [self.clip(self.load(s, describe_source(s, i))) for i, s in enumerate(sources)]

    def __call__(self, raw_audio: Any, sampling_rate: int | None = None, return_tensors: str | None = "pt",
                 ) -> BatchFeature:
        """Model inputs for one clip or a batch, as transformers' audio feature extractors take them.

        ``raw_audio``: a 1-D array or tensor (one mono clip), a 2-D one (a batch of mono clips, as in
        transformers), a list of floats, or a list of clips; a clip may also be any pengi `AudioSource` (a path,
        an ``(array, rate)`` pair or a datasets audio dict, whose 2-D arrays are ``(channels, samples)``).
        ``sampling_rate`` is the rate of the bare arrays (resampled when it differs from the model's).
        Returns ``waveforms`` (and ``waveform_lengths`` for variable-length models) as ``"pt"`` or ``"np"``.
        """
        if return_tensors not in ("pt", "np"):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        if sampling_rate is None and _has_bare_arrays(raw_audio):
            log.warning("%s got arrays without a sampling_rate: taking them as %d Hz, the model's rate; pass "
                        "sampling_rate= to have them resampled", type(self).__name__, self.sampling_rate)
        rate = self.sampling_rate if sampling_rate is None else sampling_rate
        sources = [s if _is_source(s) else (s, rate) for s in _clips(raw_audio)]
        if not sources:
            raise PengiInputError("audio", "no audio inputs given")
        data = self.audio(sources)
        if return_tensors == "np":
            data = {k: v.numpy() for k, v in data.items()}
        return BatchFeature(data, tensor_type=return_tensors)


def _is_source(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike, tuple, Mapping))


def _clips(raw: Any) -> list[Any]:
    """The clips of a feature extractor input: a 2-D array is a batch of mono rows, a list of numbers one clip."""
    if _is_source(raw):
        return [raw]
    if isinstance(raw, (np.ndarray, torch.Tensor)):
        return list(raw) if raw.ndim == 2 else [raw]
    if isinstance(raw, Sequence):
        if raw and all(isinstance(x, Real) for x in raw):
            return [np.asarray(raw, dtype=np.float32)]
        return [np.asarray(x, dtype=np.float32) if isinstance(x, list) else x for x in raw]
    return [raw]  # load_audio names what is wrong with it


def _has_bare_arrays(raw: Any) -> bool:
    return any(not _is_source(c) for c in _clips(raw))


__all__ = ["AudioClipFeatureExtractor"]
