"""What CLAP and SLAP configs share: a text encoder projected into the audio encoder's joint space, and the
temperature of their contrastive logits. No torch modules are imported here."""

from __future__ import annotations

from transformers import PreTrainedConfig

from pengi.modules.configuration_encoders import CLAP_TEMPERATURE, MAX_LOGIT_SCALE, TEXT_POOLING, AudioEncoderConfig


class ContrastiveConfig(AudioEncoderConfig):
    """`AudioEncoderConfig` plus the text side of a contrastive model.

    ``text_config``: any transformers text encoder config, pooled by ``text_pooling`` ("cls" for BERT, "last"
    for GPT-2, "pooler" for CLIP text with ``text_projection``, "mean") and truncated at ``text_max_length``
    tokens. The temperature is learnable, initialised to ``temperature``; scaled logits are clamped at
    ``max_logit_scale``.
    """

    text_config: dict | PreTrainedConfig | None = None
    text_pooling: str = "cls"
    text_projection: bool = False
    text_max_length: int = 100
    temperature: float = CLAP_TEMPERATURE
    max_logit_scale: float = MAX_LOGIT_SCALE

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.text_pooling not in TEXT_POOLING:
            raise ValueError(f"text_pooling must be one of {TEXT_POOLING}, got {self.text_pooling!r}")
        if not 0 < self.temperature < 1:
            raise ValueError(f"temperature must be in (0, 1), got {self.temperature}")
        if self.text_max_length < 1:
            raise ValueError(f"text_max_length must be at least 1, got {self.text_max_length}")


__all__ = ["ContrastiveConfig"]
