"""The audio side that Pengi and CLAP configs share: the default HTSAT shape and the checks on front end + tower."""

from __future__ import annotations

from transformers import AutoConfig, ClapAudioConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .cnn14 import Cnn14Config
from .slap_audio import SlapAudioConfig

# HTSAT as in Pengi and msclap 2023 (Swin-T on a 256x256 folded log-mel image).
HTSAT_BASE = dict(spec_size=256, window_size=8, num_mel_bins=64, patch_size=4, patch_stride=(4, 4),
                  patch_embeds_hidden_size=96, depths=[2, 2, 6, 2], num_attention_heads=[4, 8, 16, 32],
                  hidden_size=768, enable_fusion=False, num_classes=527)

AutoConfig.register(Cnn14Config.model_type, Cnn14Config, exist_ok=True)
AutoConfig.register(SlapAudioConfig.model_type, SlapAudioConfig, exist_ok=True)

# `audio_config` is any registered audio tower config; its type picks the tower (encoders.audio_backbone).
AUDIO_CONFIG_SPEC = SubConfigSpec(config_class=AutoConfig, model_type="clap_audio_model", init_kwargs=HTSAT_BASE)


def check_audio_settings(config: PreTrainedConfig, clip_seconds: float) -> None:
    """Raise a ValueError naming the setting when the front end and the audio tower do not fit together."""
    audio = config.audio_config
    if audio.num_mel_bins != config.n_mels:
        raise ValueError(f"n_mels ({config.n_mels}) must equal audio_config.num_mel_bins ({audio.num_mel_bins})")
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
