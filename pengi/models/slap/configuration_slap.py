"""`SLAPConfig`: variable-duration audio, a text encoder, and three weighted training objectives."""

from __future__ import annotations

from transformers import AutoConfig, GPT2Config
from transformers.configuration_utils import SubConfigSpec

from pengi.models.configuration_contrastive import ContrastiveConfig
from pengi.modules.configuration_slap_tower import SlapAudioConfig

# CLIP's initial temperature. CLAP's 0.007 (logit scale 100) suits towers that start pretrained; from scratch it
# drove the tiny models' audio and text embeddings to one point within a few dozen steps (loss stuck at ln(batch)).
CLIP_TEMPERATURE = 0.07


class SLAPConfig(ContrastiveConfig):
    r"""Configuration of a [`SLAP`] model (the method of arXiv 2601.12594, built for pengi).

    Sub-configurations:
        audio_config: the variable-duration audio tower (`SlapAudioConfig`; clips up to its `max_seconds`).
        text_config: any transformers text encoder config (BERT by default).

    The shared fields (front end, tower, projection, text encoder, temperature) are those of
    `ContrastiveConfig`. Front end: 16 kHz log-mel, `n_mels` bins, hop 10 ms. Long audio is cropped to
    `max_seconds` by `long_audio` ("center" or "start"); shorter audio is never padded or cropped.

    Objectives, each weighted and switched off (and not computed) by a weight of 0:
        contrastive_weight: symmetric InfoNCE of pooled audio vs text (`pengi.modules.contrastive`); the learnable
            temperature starts at `temperature` (0.07, CLIP's, since SLAP trains its towers from scratch).
        ssl_weight: masked patch prediction against an EMA teacher (`pengi.models.slap.ssl`): `ssl_mask_prob` of the
            time steps hidden in spans of `ssl_mask_span`, targets the mean of the teacher's top
            `ssl_target_layers` blocks, teacher decay `ema_decay`.
        caption_weight: a GPT-2 decoder with cross-attention (`caption_lm_config`: `caption_layers` blocks,
            `caption_heads` heads, width `caption_hidden_size`, MLP width `audio_config.mlp_ratio` times that)
            reading the tower's patch tokens, trained on the caption (`caption_max_length` tokens, also its
            number of positions), with the text tokenizer's vocabulary (`vocab_size`).
    """

    model_type = "pengi_slap"
    sub_configs_defaults = {
        "audio_config": SubConfigSpec(config_class=AutoConfig, model_type=SlapAudioConfig.model_type),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
    }

    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    win_length: int = 400
    text_max_length: int = 64
    d_proj: int = 512
    projection_dropout: float = 0.0
    temperature: float = CLIP_TEMPERATURE

    contrastive_weight: float = 1.0
    ssl_weight: float = 1.0
    caption_weight: float = 1.0

    ssl_mask_prob: float = 0.5
    ssl_mask_span: int = 3
    ssl_target_layers: int = 3
    ema_decay: float = 0.999

    vocab_size: int = 30522
    caption_hidden_size: int = 256
    caption_layers: int = 2
    caption_heads: int = 4
    caption_max_length: int = 64

    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for name in ("contrastive_weight", "ssl_weight", "caption_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.ssl_mask_prob < 1 or not 0 <= self.ema_decay < 1:
            raise ValueError("ssl_mask_prob must be in (0, 1) and ema_decay in [0, 1)")
        if not 1 <= self.ssl_target_layers <= self.audio_config.num_layers:
            raise ValueError(f"ssl_target_layers must be in 1..{self.audio_config.num_layers}")
        if self.caption_hidden_size % self.caption_heads:
            raise ValueError(f"caption_hidden_size ({self.caption_hidden_size}) must be a multiple of caption_heads "
                             f"({self.caption_heads})")
        if self.caption_max_length < 3:
            raise ValueError(f"caption_max_length must be >= 3 (start, one token, end), got {self.caption_max_length}")

    def caption_lm_config(self) -> GPT2Config:
        """The caption decoder's `GPT2Config`, derived from the caption_* fields (not stored on its own, so
        configs from before the decoder was GPT-2 keep their meaning): pre-norm blocks with cross-attention, the
        output head tied to the token embedding, ``caption_max_length`` learned positions, exact GELU, no
        dropout. Start, end and padding ids come from the tokenizer at generation time."""
        return GPT2Config(vocab_size=self.vocab_size, n_embd=self.caption_hidden_size, n_layer=self.caption_layers,
                          n_head=self.caption_heads, n_positions=self.caption_max_length,
                          n_inner=int(self.caption_hidden_size * self.audio_config.mlp_ratio),
                          activation_function="gelu", add_cross_attention=True, resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0, initializer_range=self.initializer_range, tie_word_embeddings=True,
                          bos_token_id=None, eos_token_id=None, pad_token_id=None)

    @property
    def max_seconds(self) -> float:
        return self.audio_config.max_seconds

    @property
    def audio_seconds(self) -> float:
        if not isinstance(self.audio_config, SlapAudioConfig):
            raise ValueError(f"audio_config must be a SlapAudioConfig, got {type(self.audio_config).__name__}")
        return self.max_seconds

    @property
    def seconds_per_frame(self) -> float:
        """Duration of one time step of the tower's tokens (``patch_frames`` hops)."""
        return self.audio_config.patch_frames * self.hop_length / self.sample_rate


__all__ = ["SLAPConfig"]
