"""Named SLAP shapes: a ViT-S-wide base and a tiny one for tests and CPU runs."""

from __future__ import annotations

from typing import Any

from transformers import BertConfig

from pengi.models.slap.configuration_slap import SLAPConfig
from pengi.modules.configuration_slap_tower import SlapAudioConfig


def slap_base(**overrides: Any) -> SLAPConfig:
    """A SLAP of ViT-S width (384, 6 blocks over 16x16 patches, 30 s max) with a BERT-base text encoder."""
    values: dict[str, Any] = dict(audio_config=SlapAudioConfig(), text_config=BertConfig())
    values.update(overrides)
    return SLAPConfig(**values)


def slap_tiny_audio(**overrides: Any) -> SlapAudioConfig:
    """A SLAP audio tower of a few ten thousand parameters (32 mel bins, 8x8 patches), for tests and CPU runs."""
    values: dict[str, Any] = dict(num_mel_bins=32, patch_frames=8, patch_bins=8, hidden_size=32, num_layers=2,
                                  num_heads=2, mlp_ratio=2.0)
    values.update(overrides)
    return SlapAudioConfig(**values)


def slap_tiny(vocab_size: int, **overrides: Any) -> SLAPConfig:
    """A SLAP for tests and CPU demos: tiny tower, one-layer BERT and caption decoder, 16 kHz, 32 mel bins.

    Text is mean-pooled: the [CLS] output of a BERT trained from scratch says little about the text at first,
    and the contrastive loss stalled at chance with it."""
    values: dict[str, Any] = dict(
        audio_config=slap_tiny_audio(),
        text_config=BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=128),
        text_pooling="mean", n_fft=400, hop_length=160, win_length=400, n_mels=32, d_proj=32, text_max_length=64,
        vocab_size=vocab_size, caption_hidden_size=32, caption_layers=1, caption_heads=2, caption_max_length=64,
        ssl_target_layers=2, ema_decay=0.99,
    )
    values.update(overrides)
    return SLAPConfig(**values)


SLAP_PRESETS = {"slap-base": slap_base, "slap-tiny": slap_tiny}
