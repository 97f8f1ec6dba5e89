"""`SlapAudioConfig`: the shape of SLAP's variable-duration audio tower (`pengi.modules.slap_tower`)."""

from __future__ import annotations

from transformers import PreTrainedConfig

POOLING = ("mean_max", "mean")


class SlapAudioConfig(PreTrainedConfig):
    """The audio tower of SLAP. ``max_seconds`` is the longest clip it takes; longer audio is cropped by the
    processor. ``mel_mean``/``mel_std`` are fixed normalisation constants (dB), so a clip's features never depend
    on its batch (batch norm would).

    ``pooling``: "mean_max" (masked mean plus masked max over the clip's tokens, as PANNs' CNN14 pools time) or
    "mean". Sound events are sparse in long clips: a plain mean is dominated by background, and from scratch it
    gave near-identical clip embeddings that the contrastive loss collapsed onto (docs/slap.md); the max keeps
    the loudest evidence.
    """

    model_type = "pengi_slap_audio"

    num_mel_bins: int = 64
    patch_frames: int = 16
    patch_bins: int = 16
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 6
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    rope_theta: float = 10000.0
    max_seconds: float = 30.0
    mel_mean: float = -50.0
    mel_std: float = 20.0
    pooling: str = "mean_max"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.num_mel_bins % self.patch_bins:
            raise ValueError(f"num_mel_bins ({self.num_mel_bins}) must be a multiple of patch_bins ({self.patch_bins})")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"hidden_size {self.hidden_size} must split into {self.num_heads} heads of even size")
        if self.pooling not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}, got {self.pooling!r}")
        if self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds}")

    @property
    def num_bands(self) -> int:
        return self.num_mel_bins // self.patch_bins
