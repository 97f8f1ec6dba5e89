"""`Cnn14Config`: the shape of CNN14 (PANNs), msclap 2022's audio tower (`pengi.modules.cnn14`)."""

from __future__ import annotations

from transformers import PreTrainedConfig


class Cnn14Config(PreTrainedConfig):
    """`channels`: output channels of the six conv blocks (PANNs: 64 ... 2048); the embedding has the last width."""

    model_type = "pengi_cnn14"

    num_mel_bins: int = 64
    channels: list[int] | tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    dropout: float = 0.2

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.channels = list(self.channels)
        if len(self.channels) != 6:
            raise ValueError(f"CNN14 has six conv blocks; channels has {len(self.channels)} entries")

    @property
    def hidden_size(self) -> int:
        return self.channels[-1]
