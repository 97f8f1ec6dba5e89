"""Named CLAP shapes: the two CLAP papers' models and a tiny one for tests and CPU demos."""

from __future__ import annotations

from typing import Any

from transformers import BertConfig, ClapAudioConfig, GPT2Config

from pengi.models.clap.configuration_clap import CLAPConfig
from pengi.modules.configuration_cnn14 import Cnn14Config
from pengi.modules.configuration_encoders import HTSAT_BASE


def clap_paper(**overrides: Any) -> CLAPConfig:
    """CLAP as in arXiv 2206.04769 (msclap 2022): CNN14 audio, BERT base text with [CLS] pooling, 1024-d space."""
    values: dict[str, Any] = dict(audio_config=Cnn14Config(num_mel_bins=64), text_config=BertConfig(),
                                  text_pooling="cls", text_max_length=100)
    values.update(overrides)
    return CLAPConfig(**values)


def clap_htsat_gpt2(**overrides: Any) -> CLAPConfig:
    """CLAP as in arXiv 2309.05767 (msclap 2023): HTSAT audio, GPT-2 text pooled at its last token, 7 s clips."""
    values: dict[str, Any] = dict(audio_config=ClapAudioConfig(**HTSAT_BASE), text_config=GPT2Config(),
                                  text_pooling="last", text_suffix=" <|endoftext|>", text_max_length=77,
                                  clip_seconds=7.0)
    values.update(overrides)
    return CLAPConfig(**values)


def clap_tiny(vocab_size: int, **overrides: Any) -> CLAPConfig:
    """A small CLAP for tests and CPU demos: tiny HTSAT and BERT (of ``vocab_size`` tokens), 16 kHz, 1 s clips.
    A ``text_config`` given as a dict gets ``vocab_size`` too."""
    if isinstance(overrides.get("text_config"), dict):
        overrides["text_config"] = {"vocab_size": vocab_size, **overrides["text_config"]}
    values: dict[str, Any] = dict(
        audio_config=ClapAudioConfig(spec_size=64, window_size=4, num_mel_bins=16, patch_size=4,
                                     patch_stride=(4, 4), patch_embeds_hidden_size=16, depths=[1, 1],
                                     num_attention_heads=[2, 2], hidden_size=32, enable_fusion=False),
        text_config=BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64),
        sample_rate=16000, clip_seconds=1.0, n_fft=512, hop_length=160, win_length=512, n_mels=16,
        d_proj=32, projection_dropout=0.0, text_max_length=32,
    )
    values.update(overrides)
    return CLAPConfig(**values)


CLAP_PRESETS = {"clap-paper": clap_paper, "clap-htsat-gpt2": clap_htsat_gpt2, "clap-tiny": clap_tiny}
