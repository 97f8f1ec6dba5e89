"""Named model shapes: the papers' pengi-base, CLAP and SLAP, and small shapes for tests and CPU demos."""

from __future__ import annotations

from typing import Any

from transformers import BertConfig, ClapAudioConfig, CLIPTextConfig, GPT2Config

from .cnn14 import Cnn14Config
from .configuration_clap import CLAPConfig
from .configuration_pengi import HTSAT_BASE, PengiConfig
from .configuration_slap import SLAPConfig
from .slap_audio import SlapAudioConfig


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


PRESETS = {"pengi-base": pengi_base, "pengi-base-no-text-enc": pengi_base_no_text_enc, "tiny": tiny}
CLAP_PRESETS = {"clap-paper": clap_paper, "clap-htsat-gpt2": clap_htsat_gpt2, "clap-tiny": clap_tiny}
SLAP_PRESETS = {"slap-base": slap_base, "slap-tiny": slap_tiny}
