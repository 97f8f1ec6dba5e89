"""`CLAPConfig`: a contrastive language-audio model (audio tower + text encoder + projections to a joint space)."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .audio_settings import AUDIO_CONFIG_SPEC, check_audio_settings
from .contrastive import CLAP_TEMPERATURE, MAX_LOGIT_SCALE
from .encoders import TEXT_POOLING
from .projection import PROJECTIONS

CLAP_COMPAT_MODES = (None, "msclap")


class CLAPConfig(PreTrainedConfig):
    r"""Configuration of a [`CLAP`] model. The defaults are the paper's settings (arXiv 2206.04769).

    Sub-configurations:
        audio_config: the audio tower, HTSAT (`ClapAudioConfig`, default) or CNN14 (`Cnn14Config`).
        text_config: any transformers text encoder config (BERT base by default; GPT-2, CLIP text, RoBERTa...).

    Audio front end as in the paper: 44.1 kHz, log-mel with `n_mels` 64 bins, window 1024, hop 320, 50-8000 Hz.
    Training crops `clip_seconds` (5 s) at random from longer clips; at inference long clips are cropped by
    `long_audio` ("center" by default: the same audio always gives the same embedding). Short clips are
    padded by `short_audio` ("repeat", as msclap; "repeatpad", whole repeats then silence, as LAION-CLAP; or "zeros").

    Text: pooled by `text_pooling` ("cls" for BERT, "last" for GPT-2, "pooler" for CLIP text with
    `text_projection`), truncated at `text_max_length` tokens; `text_suffix` is appended to every text
    (msclap 2023's GPT-2 encoder reads " <|endoftext|>" as the pooled token).

    Both towers project to `d_proj` (1024) with `projection`: "pengi" (Pengi's and msclap's
    ``LayerNorm(h + dropout(linear2(gelu(h))))``) or "mlp" (LAION-CLAP's ``linear2(relu(linear1(x)))``). The
    temperature is learnable, initialised to `temperature` (0.007), and the scaled logits are clamped at
    `max_logit_scale` (100).

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

    audio_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None

    sample_rate: int = 44100
    clip_seconds: float = 5.0
    n_fft: int = 1024
    hop_length: int = 320
    win_length: int = 1024
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 8000.0
    long_audio: str = "center"
    short_audio: str = "repeat"
    audio_time_segments: int = 1

    text_pooling: str = "cls"
    text_projection: bool = False
    text_max_length: int = 100
    text_suffix: str = ""

    d_proj: int = 1024
    projection: str = "pengi"
    projection_dropout: float = 0.5
    temperature: float = CLAP_TEMPERATURE
    max_logit_scale: float = MAX_LOGIT_SCALE

    freeze_audio_encoder: bool = False
    freeze_text_encoder: bool = False
    compat: str | None = None
    release_crop_seed: int | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.text_pooling not in TEXT_POOLING:
            raise ValueError(f"text_pooling must be one of {TEXT_POOLING}, got {self.text_pooling!r}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {self.projection!r}")
        if self.compat not in CLAP_COMPAT_MODES:
            raise ValueError(f"compat must be one of {CLAP_COMPAT_MODES}, got {self.compat!r}")
        if self.long_audio not in ("center", "start"):
            raise ValueError(f"long_audio must be 'center' or 'start', got {self.long_audio!r}")
        if self.short_audio not in ("repeat", "repeatpad", "zeros"):
            raise ValueError(f"short_audio must be 'repeat', 'repeatpad' or 'zeros', got {self.short_audio!r}")
        if not 0 < self.temperature < 1:
            raise ValueError(f"temperature must be in (0, 1), got {self.temperature}")
        check_audio_settings(self, self.clip_seconds)

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))


__all__ = ["CLAPConfig"]
