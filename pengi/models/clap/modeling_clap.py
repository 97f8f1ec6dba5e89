"""The CLAP model: audio and text encoders projected into one space, trained with a symmetric contrastive loss.

    audio -> AudioEncoder (HTSAT or CNN14 + projection) -> L2 norm --\
                                                                      > exp(logit_scale) * cosine -> InfoNCE
    text  -> TextEncoder  (BERT, GPT-2, CLIP text... + projection) -> L2 norm --/

Zero-shot classification scores each clip against "This is a sound of {label}" for every label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from pengi.audio import AudioSource, describe_source
from pengi.errors import PengiInputError
from pengi.models.clap.configuration_clap import CLAPConfig
from pengi.models.clap.processing_clap import CLAPProcessor
from pengi.models.contrastive import DEFAULT_TEMPLATE, TEMPLATES, ContrastiveMixin
from pengi.models.pretrained import WithProcessor, as_list
from pengi.modules.contrastive import contrastive_loss, initial_logit_scale
from pengi.modules.encoders import AudioEncoder, TextEncoder


@dataclass
class CLAPOutput(ModelOutput):
    """``logits_per_audio[i, j]``: scaled similarity of clip ``i`` and text ``j``; embeddings are L2-normalised."""

    loss: torch.Tensor | None = None
    logits_per_audio: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    audio_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None


class CLAP(ContrastiveMixin, WithProcessor, PreTrainedModel):
    """Contrastive language-audio model: `embed_audio`, `embed_text`, `zero_shot`, and `forward` for training."""

    config_class = CLAPConfig
    config: CLAPConfig
    processor_class = CLAPProcessor
    base_model_prefix = "clap"
    main_input_name = "waveforms"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: CLAPConfig):
        super().__init__(config)
        self.audio_encoder = AudioEncoder(config)
        pooling = config.text_pooling
        if config.compat == "msclap" and pooling == "last":
            pooling = "last_nonzero"  # msclap counts non-pad ids, and its pad id is 0
        self.text_encoder = TextEncoder(config.text_config, pooling, config.text_projection, config.d_proj,
                                        config.projection_dropout, config.projection)
        self.logit_scale = nn.Parameter(torch.tensor(initial_logit_scale(config.temperature)))
        self.processor: CLAPProcessor | None = None
        self._text_cache: dict[str, torch.Tensor] = {}
        self.post_init()
        self.apply_freezing()

    def apply_freezing(self) -> None:
        """Freeze the backbones the config names (projections and the temperature always train)."""
        if self.config.freeze_audio_encoder:
            self.audio_encoder.base.requires_grad_(False)
        if self.config.freeze_text_encoder:
            self.text_encoder.base.requires_grad_(False)

    # ------------------------------------------------------------------ tensors in, tensors out
    def audio_embedding(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` at the model's sample rate -> L2-normalised embeddings ``(batch, d_proj)``."""
        return F.normalize(self.audio_encoder(waveforms.to(self.device)), dim=-1)

    def forward(self, waveforms: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                return_loss: bool | None = None, **kwargs: Any) -> CLAPOutput:
        """Logits of every clip against every text, and for pairs (row ``i`` of the audio and of the text a positive
        pair, every other pairing a negative) the contrastive loss.

        ``return_loss``: None (the default) computes the loss when there are as many texts as clips, as training
        batches have; transformers' zero-shot-audio-classification pipeline passes one clip and the label texts, and
        gets the logits. In a multi-process run the loss's negatives span every process's batch (equal batch sizes
        needed). Other keyword arguments (``token_type_ids`` from BERT tokenizers) are ignored.
        """
        audio = self.audio_embedding(waveforms)
        text = self.text_embedding(input_ids, attention_mask)
        logits = self.logits(audio, text)
        paired = audio.shape[0] == text.shape[0]
        if return_loss and not paired:
            raise ValueError(f"return_loss needs (clip, text) pairs: got {audio.shape[0]} clips and "
                             f"{text.shape[0]} texts")
        loss = None
        if paired if return_loss is None else return_loss:
            loss = contrastive_loss(audio, text, self.logit_scale, self.config.max_logit_scale)
        return CLAPOutput(loss=loss, logits_per_audio=logits, logits_per_text=logits.T, audio_embeds=audio,
                          text_embeds=text)

    # ------------------------------------------------------------------ user inputs in
    def embed_audio(self, audio: AudioSource | Sequence[AudioSource], batch_size: int = 32) -> torch.Tensor:
        """L2-normalised audio embeddings ``(n, d_proj)`` for paths, arrays or a mix of them.

        Long clips are cropped deterministically (``config.long_audio``), so the same audio always gives the
        same embedding.
        """
        proc = self._require_processor()
        sources = as_list(audio)
        if not sources:
            raise PengiInputError("audio", "no audio inputs given")
        out = []
        for start in range(0, len(sources), batch_size):
            chunk = sources[start:start + batch_size]
            waves = torch.stack([proc.clip(proc.load(s, describe_source(s, start + i))) for i, s in enumerate(chunk)])
            with torch.inference_mode():
                out.append(self.audio_embedding(waves))
        return torch.cat(out)


__all__ = ["CLAP", "CLAPOutput", "DEFAULT_TEMPLATE", "TEMPLATES"]
