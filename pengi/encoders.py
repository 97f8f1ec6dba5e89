"""Audio and prompt encoders: a backbone from transformers plus Pengi's projection to the joint space."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, ClapAudioModel

from .configuration_pengi import PengiConfig
from .frontend import LogMelSpectrogram
from .projection import Projection


class AudioEncoder(nn.Module):
    """Waveforms -> log-mel -> HTSAT (transformers' CLAP audio tower, with bn0 over mel bins) -> projection."""

    def __init__(self, config: PengiConfig):
        super().__init__()
        self.frontend = LogMelSpectrogram(config.sample_rate, config.n_fft, config.hop_length, config.win_length,
                                          config.n_mels, config.f_min, config.f_max)
        self.base = ClapAudioModel(config.audio_config)
        self.segments = config.audio_time_segments
        width = self.base.audio_encoder.num_features * self.segments
        self.projection = Projection(width, config.d_proj, config.projection_dropout)

    def features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled output (or its time-segment means, concatenated), before projection."""
        mel = self.frontend(waveforms).to(self.base.dtype)
        out = self.base(input_features=mel)
        if self.segments == 1:
            return out.pooler_output
        # last_hidden_state is (batch, channels, freq, time) with HTSAT's folded time chunks put back in order.
        over_time = out.last_hidden_state.mean(dim=2)
        return F.adaptive_avg_pool1d(over_time, self.segments).flatten(1)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(waveforms))


class PromptEncoder(nn.Module):
    """Any transformers text encoder, pooled to one vector per prompt, then projected to the joint space.

    Pooling: ``pooler`` (the model's own pooled output: CLIP's end-of-text token), ``cls`` (first token,
    as msclap's BERT), ``last`` (last real token, as GPT-2 text encoders) or ``mean`` (masked mean).
    ``clip_text_projection`` is CLIP's bias-free text projection, used by Pengi.
    """

    def __init__(self, config: PengiConfig):
        super().__init__()
        self.pooling = config.prompt_pooling
        self.base = AutoModel.from_config(config.prompt_encoder_config)
        width = config.prompt_encoder_config.hidden_size
        self.clip_text_projection = nn.Linear(width, width, bias=False) if config.prompt_text_projection else None
        self.projection = Projection(width, config.d_proj, config.projection_dropout)
        self.cache_size = 0
        self._cache: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()

    def enable_cache(self, size: int = 4096) -> None:
        """Remember the pooled output of up to ``size`` prompts while the backbone is frozen.

        Training feeds a frozen encoder the same few task prompts at every step; with the cache each is
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
        hidden = out.last_hidden_state
        if self.pooling == "pooler":
            return out.pooler_output
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "last":
            last = attention_mask.sum(dim=1) - 1
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(input_ids, attention_mask)
        if self.clip_text_projection is not None:
            pooled = self.clip_text_projection(pooled)
        return self.projection(pooled)
