"""`CLAPConfig`: a contrastive language-audio model (audio tower + text encoder + projections to a joint space)."""

from __future__ import annotations

from transformers import AutoConfig
from transformers.configuration_utils import SubConfigSpec

from pengi.models.configuration_contrastive import ContrastiveConfig
from pengi.modules.configuration_encoders import AUDIO_CONFIG_SPEC

CLAP_COMPAT_MODES = (None, "msclap")
SHORT_AUDIO_POLICIES = ("repeat", "repeatpad", "zeros")


class CLAPConfig(ContrastiveConfig):
    r"""Configuration of a [`CLAP`] model. The defaults are the paper's settings (arXiv 2206.04769).

    Sub-configurations:
        audio_config: the audio tower, HTSAT (`ClapAudioConfig`, default) or CNN14 (`Cnn14Config`).
        text_config: any transformers text encoder config (BERT base by default; GPT-2, CLIP text, RoBERTa...).

    The shared fields (front end, tower, projection, text encoder, temperature) are those of
    `ContrastiveConfig`. Audio front end as in the paper: 44.1 kHz, log-mel with 64 bins, window 1024, hop
    320, 50-8000 Hz. Training crops `clip_seconds` (5 s) at random from longer clips; at inference long clips
    are cropped by `long_audio` ("center" by default: the same audio always gives the same embedding). Short
    clips are padded by `short_audio` ("repeat", as msclap; "repeatpad", whole repeats then silence, as
    LAION-CLAP; or "zeros").

    `text_suffix` is appended to every text (msclap 2023's GPT-2 encoder reads " <|endoftext|>" as the pooled
    token). Both towers project to `d_proj` (1024) with `projection`; the temperature starts at 0.007.

    `compat="msclap"` reproduces msclap's published inference, for users who must match its numbers: stereo
    channels concatenated end to end, long clips cropped at random (seed it with `release_crop_seed`), and
    "last" text pooling at position (number of non-zero ids - 1), which is not the last token when a text
    contains "!" (GPT-2's id 0, msclap's pad). The default (`None`) is the corrected behaviour.
    """

    model_type = "pengi_clap"
    sub_configs_defaults = {
        "audio_config": AUDIO_CONFIG_SPEC,
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
    }

    clip_seconds: float = 5.0
    short_audio: str = "repeat"
    text_suffix: str = ""

    freeze_audio_encoder: bool = False
    freeze_text_encoder: bool = False
    compat: str | None = None
    release_crop_seed: int | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.compat not in CLAP_COMPAT_MODES:
            raise ValueError(f"compat must be one of {CLAP_COMPAT_MODES}, got {self.compat!r}")
        if self.short_audio not in SHORT_AUDIO_POLICIES:
            raise ValueError(f"short_audio must be one of {SHORT_AUDIO_POLICIES}, got {self.short_audio!r}")


__all__ = ["CLAPConfig"]
