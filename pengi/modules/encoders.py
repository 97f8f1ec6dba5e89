"""Audio and text encoders: a backbone plus a projection to the joint space. Shared by Pengi, CLAP and SLAP."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, ClapAudioConfig, ClapAudioModel, PreTrainedConfig

from pengi.audio.frontend import LogMelSpectrogram
from pengi.modules.cnn14 import Cnn14
from pengi.modules.configuration_cnn14 import Cnn14Config
from pengi.modules.configuration_encoders import TEXT_POOLING, AudioEncoderConfig
from pengi.modules.configuration_slap_tower import SlapAudioConfig
from pengi.modules.htsat_attention import set_htsat_attention
from pengi.modules.projection import make_projection
from pengi.modules.slap_tower import SlapAudioModel


def audio_backbone(config: PreTrainedConfig) -> nn.Module:
    """The audio tower named by the type of ``config``: HTSAT (`ClapAudioConfig`), CNN14 (`Cnn14Config`) or
    SLAP's variable-duration transformer (`SlapAudioConfig`)."""
    if isinstance(config, ClapAudioConfig):
        model = ClapAudioModel(config)
        set_htsat_attention(model, "sdpa")  # the same attention in one fused call (pengi.modules.htsat_attention)
        return model
    if isinstance(config, Cnn14Config):
        return Cnn14(config)
    if isinstance(config, SlapAudioConfig):
        return SlapAudioModel(config)
    raise ValueError(f"unsupported audio encoder config {type(config).__name__}: use ClapAudioConfig (HTSAT), "
                     "Cnn14Config or SlapAudioConfig")


def parameter_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module``'s weights: a projection's inputs are cast to it, since a frozen backbone may be
    held in bf16 while the projection trains in fp32 (`Pengi.hold_frozen_in`)."""
    return next(module.parameters()).dtype


class AudioEncoder(nn.Module):
    """Waveforms -> log-mel -> audio tower (HTSAT or CNN14, each with bn0 over mel bins; or SLAP's) -> projection.

    HTSAT and CNN14 take ``(batch, clip_samples)``. The SLAP tower takes clips of any lengths: right-padded
    ``(batch, samples)`` with ``lengths`` (samples per clip); each clip's log-mel is computed from its own
    samples only, so padding never leaks into a clip's frames.

    ``config`` is any `AudioEncoderConfig` (`PengiConfig`, `CLAPConfig`, `SLAPConfig`).
    """

    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        self.frontend = LogMelSpectrogram(config.sample_rate, config.n_fft, config.hop_length, config.win_length,
                                          config.n_mels, config.f_min, config.f_max)
        self.base = audio_backbone(config.audio_config)
        self.segments = config.audio_time_segments
        own = isinstance(self.base, (Cnn14, SlapAudioModel))
        num_features = self.base.num_features if own else self.base.audio_encoder.num_features
        self.projection = make_projection(config.projection, num_features * self.segments,
                                          config.d_proj, config.projection_dropout)

    @property
    def variable_length(self) -> bool:
        return isinstance(self.base, SlapAudioModel)

    def mels(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each clip's own log-mel ``(frames, n_mels)``, from its first ``lengths[i]`` samples."""
        if lengths is None:
            return list(self.frontend(waveforms)[:, 0])
        return [self.frontend(w[None, :int(n)])[0, 0] for w, n in zip(waveforms, lengths)]

    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone's pooled output (or its time-segment means, concatenated), before projection."""
        if isinstance(self.base, SlapAudioModel):
            return self.base(self.mels(waveforms, lengths)).pooled
        mel = self.frontend(waveforms).to(self.base.dtype)
        if isinstance(self.base, Cnn14):
            return self.base(mel)
        out = self.base(input_features=mel)
        if self.segments == 1:
            return out.pooler_output
        # last_hidden_state is (batch, channels, freq, time) with HTSAT's folded time chunks put back in order.
        over_time = out.last_hidden_state.mean(dim=2)
        return F.adaptive_avg_pool1d(over_time, self.segments).flatten(1)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.projection(self.features(waveforms, lengths).to(parameter_dtype(self.projection)))

    @property
    def has_frames(self) -> bool:
        return isinstance(self.base, ClapAudioModel) and self.segments == 1

    def frame_features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """HTSAT's time-ordered output (mean over frequency), each frame mapped by the projection:
        ``(batch, frames, d_proj)``, frame-level features in the joint space. Needs ``audio_time_segments`` 1,
        where the clip embedding is the projection of these frames' mean."""
        if not self.has_frames:
            raise ValueError("frame features need the HTSAT audio encoder with audio_time_segments 1")
        mel = self.frontend(waveforms).to(self.base.dtype)
        frames = self.base(input_features=mel).last_hidden_state.mean(dim=2).transpose(1, 2)
        return self.projection(frames.to(parameter_dtype(self.projection)))



class TextEncoder(nn.Module):
    """Any transformers text encoder, pooled to one vector per text, then projected to the joint space.

    Pooling: ``pooler`` (the model's own pooled output: CLIP's end-of-text token), ``cls`` (first token,
    as msclap's BERT), ``last`` (last real token, as GPT-2 text encoders), ``mean`` (masked mean) or
    ``last_nonzero`` (msclap 2023's rule: position = number of non-zero ids - 1; its pad id is 0, "!", so this is
    the last real token unless the text itself contains "!").
    ``clip_text_projection`` is CLIP's bias-free text projection, used by Pengi. Pengi's prompt encoder and
    CLAP's text encoder are both this.
    """

    def __init__(self, text_config: PreTrainedConfig, pooling: str, clip_text_projection: bool, d_proj: int,
                 dropout: float, projection: str = "pengi"):
        super().__init__()
        if pooling not in TEXT_POOLING:
            raise ValueError(f"text pooling must be one of {TEXT_POOLING}, got {pooling!r}")
        self.pooling = pooling
        self.base = AutoModel.from_config(text_config)
        width = text_config.hidden_size
        self.clip_text_projection = nn.Linear(width, width, bias=False) if clip_text_projection else None
        self.projection = make_projection(projection, width, d_proj, dropout)
        self.cache_size = 0
        self._cache: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()

    def enable_cache(self, size: int = 4096) -> None:
        """Remember the pooled output of up to ``size`` prompts while the backbone is frozen.

        Pengi's training feeds a frozen encoder the same few task prompts at every step; with the cache each is
        encoded once. The cache is skipped whenever the backbone has trainable parameters.
        """
        self.cache_size = size
        self._cache.clear()

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        frozen = not any(p.requires_grad for p in self.base.parameters())
        if not (self.cache_size and frozen):
            return self._pool(input_ids, attention_mask)
        keys = [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(input_ids, attention_mask)]
        first: dict[tuple[int, ...], int] = {}
        for i, key in enumerate(keys):
            if key not in self._cache:
                first.setdefault(key, i)
        missing = list(first.values())
        if missing:
            with torch.no_grad():
                pooled = self._pool(input_ids[missing], attention_mask[missing])
            for i, row in zip(missing, pooled):
                self._cache[keys[i]] = row
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return torch.stack([self._cache[k] for k in keys])

    def _pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.base(input_ids=input_ids, attention_mask=attention_mask)
        return self._pool_output(out, attention_mask, input_ids)

    def _pool_output(self, out, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        hidden = out.last_hidden_state
        if self.pooling == "pooler":
            return out.pooler_output
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling in ("last", "last_nonzero"):
            counted = attention_mask if self.pooling == "last" else input_ids != 0
            last = counted.sum(dim=1) - 1
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        pooled = pooled.to(parameter_dtype(self.projection))
        if self.clip_text_projection is not None:
            pooled = self.clip_text_projection(pooled)
        return self.projection(pooled)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.project(self.pool(input_ids, attention_mask))

    def from_embeddings(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Like `forward`, from input token embeddings (which may hold learned prompt vectors) instead of ids."""
        if self.pooling in ("pooler", "last_nonzero"):
            raise ValueError(f"pooling {self.pooling!r} needs token ids; use another pooling")
        out = self.base(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        return self.project(self._pool_output(out, attention_mask))

    def token_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Every token's hidden state mapped by the projection: ``(batch, tokens, d_proj)``, token-level
        features in the joint space (padding positions included; mask them with ``attention_mask``)."""
        hidden = self.base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = hidden.to(parameter_dtype(self.projection))
        if self.clip_text_projection is not None:
            hidden = self.clip_text_projection(hidden)
        return self.projection(hidden)
