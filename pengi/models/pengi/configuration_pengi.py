"""`PengiConfig`: every number that defines a Pengi model, saved as config.json beside its weights."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from pengi.modules.configuration_encoders import AUDIO_CONFIG_SPEC, HTSAT_BASE, TEXT_POOLING, AudioEncoderConfig

COMPAT_MODES = (None, "pengi-release")


class PengiConfig(AudioEncoderConfig):
    r"""Configuration of a [`Pengi`] model.

    Sub-configurations:
        audio_config: the audio tower: HTSAT (`ClapAudioConfig`, the CLAP audio tower of transformers, the
            default) or CNN14 (`Cnn14Config`).
        lm_config: any causal LM config (`AutoConfig`; GPT-2 base by default).
        prompt_encoder_config: any text encoder config, or `None` to embed prompts with the LM's own
            embedding table and map them with a token-level text mapper (the release's `base_no_text_enc`).

    Audio front end and encoder: the fields of `AudioEncoderConfig` (`sample_rate`, `n_fft`, `hop_length`,
    `win_length`, `n_mels`, `f_min`, `f_max`, `long_audio`, `audio_time_segments`, `d_proj`,
    `projection_dropout`), and `clip_seconds`, the window: short clips are repeated to fill it, long ones
    cropped by `long_audio`. `audio_time_segments` 1 is HTSAT's own pooled output, as in Pengi.

    Mapping: encoders project to `d_proj`; two ClipCap transformer mappers (`mapper_layers`,
    `mapper_heads`, `mapper_mlp_ratio`) make `audio_prefix_length` and `text_prefix_length` LM embeddings.
    `text_prefix_length=0` makes a captioner that reads no prompt (msclap's clapcap): no text mapper and no
    prompt encoder; the LM sees the audio prefix alone and prompts are ignored.
    `append_prompt_tokens` (models without a prompt encoder) also feeds the prompt's own LM tokens after the
    two prefixes, the release's optional extra GPT-2 tokens, so that a frozen LM reads the question itself.
    They are left-padded to `prompt_max_length` with the pad token, unmasked as the release pads its
    prompts, which keeps the LM input one fixed length for every prompt.

    Generation stops at any of `stop_token_ids` (default: the LM tokenizer's end-of-text token).

    `compat="pengi-release"` reproduces the published inference (stereo channels concatenated, a random
    crop of long clips seeded by `release_crop_seed`, prompt padded to a fixed length with no mask, prompt
    embedding not normalised); the default (`None`) is the corrected behaviour.
    """

    model_type = "pengi"
    sub_configs_defaults = {
        "audio_config": AUDIO_CONFIG_SPEC,
        "lm_config": SubConfigSpec(config_class=AutoConfig, model_type="gpt2"),
        "prompt_encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_text_model", optional=True),
    }

    lm_config: dict | PreTrainedConfig | None = None
    prompt_encoder_config: dict | PreTrainedConfig | None = None

    clip_seconds: float = 7.0
    normalize_audio_embedding: bool = True
    normalize_prompt_embedding: bool = True

    prompt_max_length: int = 40
    append_prompt_tokens: bool = False
    prompt_pooling: str = "pooler"
    prompt_text_projection: bool = True

    audio_prefix_length: int = 40
    text_prefix_length: int = 40
    mapper_layers: int = 4
    mapper_heads: int = 8
    mapper_mlp_ratio: float = 2.0
    mapper_dropout: float = 0.0

    freeze_lm: bool = True
    freeze_prompt_encoder: bool = True
    freeze_audio_encoder: bool = False

    max_new_tokens: int = 30
    num_beams: int = 3
    stop_token_ids: list[int] | None = None

    compat: str | None = None
    release_crop_seed: int | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.compat not in COMPAT_MODES:
            raise ValueError(f"compat must be one of {COMPAT_MODES}, got {self.compat!r}")
        if self.prompt_pooling not in TEXT_POOLING:
            raise ValueError(f"prompt_pooling must be one of {TEXT_POOLING}, got {self.prompt_pooling!r}")
        if self.append_prompt_tokens and self.prompt_encoder_config is not None:
            raise ValueError("append_prompt_tokens needs prompts in the LM's own tokens: use it with no prompt encoder")
        if self.text_prefix_length < 0:
            raise ValueError(f"text_prefix_length must be >= 0, got {self.text_prefix_length}")
        if self.text_prefix_length == 0 and (self.prompt_encoder_config is not None or self.append_prompt_tokens):
            raise ValueError("text_prefix_length=0 is a model that reads no prompt: it takes no prompt encoder and "
                             "no append_prompt_tokens")


__all__ = ["HTSAT_BASE", "PengiConfig"]
