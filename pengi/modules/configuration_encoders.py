"""The encoder settings every pengi model config shares, and the checks that they fit together.

`AudioEncoderConfig` holds what `pengi.modules.encoders.AudioEncoder` reads: the log-mel front end
(``sample_rate``, ``n_fft``, ``hop_length``, ``win_length``, ``n_mels``, ``f_min``, ``f_max``), the audio tower
(``audio_config``: HTSAT, CNN14 or SLAP's tower), ``audio_time_segments``, the policy for long clips
(``long_audio``) and the projection into the joint space (``d_proj``; ``projection`` "pengi", Pengi's and
msclap's ``LayerNorm(h + dropout(linear2(gelu(h))))``, or "mlp", LAION-CLAP's ``linear2(relu(linear1(x)))``;
``projection_dropout``). `PengiConfig`,
`CLAPConfig` and `SLAPConfig` inherit it and change only the defaults. No torch modules are imported here.
"""

from __future__ import annotations

from transformers import AutoConfig, ClapAudioConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from pengi.modules.configuration_cnn14 import Cnn14Config
from pengi.modules.configuration_slap_tower import SlapAudioConfig

# HTSAT as in Pengi and msclap 2023 (Swin-T on a 256x256 folded log-mel image).
HTSAT_BASE = dict(spec_size=256, window_size=8, num_mel_bins=64, patch_size=4, patch_stride=(4, 4),
                  patch_embeds_hidden_size=96, depths=[2, 2, 6, 2], num_attention_heads=[4, 8, 16, 32],
                  hidden_size=768, enable_fusion=False, num_classes=527)

AutoConfig.register(Cnn14Config.model_type, Cnn14Config, exist_ok=True)
AutoConfig.register(SlapAudioConfig.model_type, SlapAudioConfig, exist_ok=True)

# `audio_config` is any registered audio tower config; its type picks the tower (encoders.audio_backbone).
AUDIO_CONFIG_SPEC = SubConfigSpec(config_class=AutoConfig, model_type="clap_audio_model", init_kwargs=HTSAT_BASE)

LONG_AUDIO_POLICIES = ("center", "start")
TEXT_POOLING = ("pooler", "cls", "last", "mean", "last_nonzero")
PROJECTIONS = ("pengi", "mlp")
CLAP_TEMPERATURE = 0.007  # the CLAP papers' initial temperature: logit scale log(1 / 0.007)
MAX_LOGIT_SCALE = 100.0  # scaled logits are clamped at 100, as in CLIP


class AudioEncoderConfig(PreTrainedConfig):
    """Front end, audio tower and projection, shared by every family (see the module docstring).

    ``long_audio``: clips longer than the model's window are cropped at the ``"center"`` (the same audio always
    gives the same output) or at the ``"start"``. ``audio_time_segments`` > 1 pools HTSAT's time-ordered
    output into that many consecutive segments (concatenated) instead of one global mean, so the embedding
    keeps when things happen.
    """

    audio_config: dict | PreTrainedConfig | None = None

    sample_rate: int = 44100
    n_fft: int = 1024
    hop_length: int = 320
    win_length: int = 1024
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 8000.0
    long_audio: str = "center"
    audio_time_segments: int = 1

    d_proj: int = 1024
    projection: str = "pengi"
    projection_dropout: float = 0.5

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.long_audio not in LONG_AUDIO_POLICIES:
            raise ValueError(f"long_audio must be one of {LONG_AUDIO_POLICIES}, got {self.long_audio!r}")
        for name in ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "audio_time_segments", "d_proj"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min {self.f_min}, "
                             f"f_max {self.f_max} at {self.sample_rate} Hz")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {self.projection!r}")
        if not 0 <= self.projection_dropout < 1:
            raise ValueError(f"projection_dropout must be in [0, 1), got {self.projection_dropout}")
        check_audio_tower(self, self.audio_seconds)

    @property
    def audio_seconds(self) -> float:
        """The longest clip the audio tower takes in one piece: the model's window (``clip_seconds``) or, for
        SLAP's variable-duration tower, its ``max_seconds``."""
        if isinstance(self.audio_config, SlapAudioConfig):
            return self.audio_config.max_seconds
        return self.clip_seconds

    @property
    def variable_length(self) -> bool:
        """Whether clips are taken whole up to ``audio_seconds`` (SLAP's tower) instead of fitted to a window."""
        return isinstance(self.audio_config, SlapAudioConfig)

    @property
    def clip_samples(self) -> int:
        """Samples in the model's window (for a variable-length tower: the most a clip may have)."""
        return int(round(self.audio_seconds * self.sample_rate))


def check_audio_tower(config: AudioEncoderConfig, clip_seconds: float) -> None:
    """Raise a ValueError naming the setting when the front end and the audio tower do not fit together."""
    audio = config.audio_config
    if audio.num_mel_bins != config.n_mels:
        raise ValueError(f"n_mels ({config.n_mels}) must equal audio_config.num_mel_bins ({audio.num_mel_bins})")
    if config.audio_time_segments > 1 and not isinstance(audio, ClapAudioConfig):
        raise ValueError("audio_time_segments > 1 needs the HTSAT audio encoder")
    if isinstance(audio, Cnn14Config):
        if config.n_mels < 32:
            raise ValueError(f"CNN14 halves the mel axis five times: it needs n_mels >= 32, got {config.n_mels}")
        return
    if isinstance(audio, SlapAudioConfig):
        return  # any length up to audio.max_seconds; the mel split is checked by SlapAudioConfig itself
    if not isinstance(audio, ClapAudioConfig):
        raise ValueError("audio_config must be a ClapAudioConfig (HTSAT), a Cnn14Config or a SlapAudioConfig, "
                         f"got {type(audio).__name__}")
    stride = audio.patch_stride[0] if isinstance(audio.patch_stride, (list, tuple)) else audio.patch_stride
    last_grid = audio.spec_size // stride // 2 ** (len(audio.depths) - 1)
    if last_grid < audio.window_size:
        raise ValueError(f"HTSAT's last stage is {last_grid}x{last_grid} patches, smaller than its attention "
                         f"window ({audio.window_size}): use fewer stages (depths), a larger spec_size or a "
                         "smaller window_size")
    frames = int(round(clip_seconds * config.sample_rate)) // config.hop_length + 1
    capacity = audio.spec_size * (audio.spec_size // config.n_mels)
    if frames > capacity:
        raise ValueError(f"{clip_seconds} s at hop {config.hop_length} gives {frames} frames, more than the "
                         f"HTSAT input holds ({capacity}); shorten clip_seconds or enlarge spec_size")


__all__ = ["AUDIO_CONFIG_SPEC", "CLAP_TEMPERATURE", "HTSAT_BASE", "LONG_AUDIO_POLICIES", "MAX_LOGIT_SCALE",
           "PROJECTIONS", "TEXT_POOLING", "AudioEncoderConfig", "check_audio_tower"]
