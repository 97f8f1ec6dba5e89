"""Named Pengi shapes: the published pengi-base (with and without its text encoder) and a tiny one for tests."""

from __future__ import annotations

from typing import Any

from transformers import ClapAudioConfig, CLIPTextConfig, GPT2Config

from pengi.models.pengi.configuration_pengi import PengiConfig
from pengi.modules.configuration_encoders import HTSAT_BASE


def pengi_base(**overrides: Any) -> PengiConfig:
    """The published pengi-base: HTSAT, CLIP ViT-B/16 text encoder, GPT-2 base, prefixes of 40 + 40."""
    values: dict[str, Any] = dict(
        audio_config=ClapAudioConfig(**HTSAT_BASE),
        prompt_encoder_config=CLIPTextConfig(vocab_size=49408, hidden_size=512, intermediate_size=2048,
                                             num_hidden_layers=12, num_attention_heads=8,
                                             max_position_embeddings=77, eos_token_id=49407),
        lm_config=GPT2Config(),
    )
    values.update(overrides)
    return PengiConfig(**values)


def pengi_base_no_text_enc(**overrides: Any) -> PengiConfig:
    """The published base_no_text_enc: prompts embedded by GPT-2 and mapped token by token."""
    return pengi_base(prompt_encoder_config=None, **overrides)


def tiny(vocab_size: int = 50257, prompt_encoder_config: Any = None, **overrides: Any) -> PengiConfig:
    """A model of about two million parameters (most in the token embedding): 16 kHz, 1 s clips."""
    if "lm_config" not in overrides:
        eos = min(vocab_size - 1, 50256)
        overrides["lm_config"] = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=128,
                                            bos_token_id=eos, eos_token_id=eos)
    if "audio_config" not in overrides:
        overrides["audio_config"] = ClapAudioConfig(
            spec_size=64, window_size=4, num_mel_bins=16, patch_size=4, patch_stride=(4, 4),
            patch_embeds_hidden_size=16, depths=[1, 1], num_attention_heads=[2, 2], hidden_size=32,
            enable_fusion=False)
    values: dict[str, Any] = dict(
        prompt_encoder_config=prompt_encoder_config,
        sample_rate=16000, clip_seconds=1.0, n_fft=512, hop_length=160, win_length=512, n_mels=16,
        f_min=50.0, f_max=8000.0, d_proj=32, audio_prefix_length=4, text_prefix_length=4,
        mapper_layers=1, mapper_heads=2, prompt_max_length=16, max_new_tokens=12, num_beams=1,
        projection_dropout=0.0,
    )
    values.update(overrides)
    return PengiConfig(**values)


PRESETS = {"pengi-base": pengi_base, "pengi-base-no-text-enc": pengi_base_no_text_enc, "tiny": tiny}
