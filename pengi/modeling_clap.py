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

from .audio import AudioSource, describe_source
from .configuration_clap import CLAPConfig
from .contrastive import contrastive_logits, contrastive_loss, initial_logit_scale
from .encoders import AudioEncoder, TextEncoder
from .errors import PengiInputError
from .pretrained import WithProcessor, as_list
from .processing_clap import CLAPProcessor

DEFAULT_TEMPLATE = "This is a sound of {label}"
TEMPLATES = {
    "sound": DEFAULT_TEMPLATE,
    "emotion": "this person is feeling {label}",
    "keyword": "{label}",
    "speaker_count": "{label} persons speaking",
}
"""The CLAP paper's zero-shot templates, by task."""


@dataclass
class CLAPOutput(ModelOutput):
    """``logits_per_audio[i, j]``: scaled similarity of clip ``i`` and text ``j``; embeddings are L2-normalised."""

    loss: torch.Tensor | None = None
    logits_per_audio: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    audio_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None


class CLAP(WithProcessor, PreTrainedModel):
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

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self:
            with torch.no_grad():
                self.logit_scale.fill_(initial_logit_scale(self.config.temperature))

    def apply_freezing(self) -> None:
        """Freeze the backbones the config names (projections and the temperature always train)."""
        if self.config.freeze_audio_encoder:
            self.audio_encoder.base.requires_grad_(False)
        if self.config.freeze_text_encoder:
            self.text_encoder.base.requires_grad_(False)

    def train(self, mode: bool = True) -> CLAP:
        self._text_cache.clear()  # weights are about to change: cached text embeddings go stale
        return super().train(mode)

    # ------------------------------------------------------------------ tensors in, tensors out
    def audio_embedding(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` at the model's sample rate -> L2-normalised embeddings ``(batch, d_proj)``."""
        return F.normalize(self.audio_encoder(waveforms.to(self.device)), dim=-1)

    def text_embedding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids -> L2-normalised embeddings ``(batch, d_proj)``."""
        return F.normalize(self.text_encoder(input_ids.to(self.device), attention_mask.to(self.device)), dim=-1)

    def logits(self, audio_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarities ``(n_audio, n_text)``, as trained (temperature clamped)."""
        return contrastive_logits(audio_embeds, text_embeds, self.logit_scale, self.config.max_logit_scale)

    def forward(self, waveforms: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                return_loss: bool = True, **kwargs: Any) -> CLAPOutput:
        """Row ``i`` of the audio and of the text is a positive pair; every other pairing is a negative.

        In a multi-process run the loss's negatives span every process's batch (equal batch sizes needed).
        """
        audio = self.audio_embedding(waveforms)
        text = self.text_embedding(input_ids, attention_mask)
        logits = self.logits(audio, text)
        loss = None
        if return_loss:
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

    def embed_text(self, texts: str | Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings ``(n, d_proj)``. In eval mode they are cached by text, so class
        prompts are encoded once however many clips are classified; the cache empties on `train()`."""
        proc = self._require_processor()
        texts = as_list(texts)
        use_cache = not self.training
        missing = [t for t in dict.fromkeys(texts) if not (use_cache and t in self._text_cache)]
        fresh: dict[str, torch.Tensor] = {}
        for start in range(0, len(missing), batch_size):
            chunk = missing[start:start + batch_size]
            with torch.inference_mode():
                fresh.update(zip(chunk, self.text_embedding(**proc.texts(chunk))))
        if use_cache:
            self._text_cache.update(fresh)
            fresh = self._text_cache
        return torch.stack([fresh[t] for t in texts]) if texts else torch.empty(0, self.config.d_proj)

    def similarity(self, audio: AudioSource | Sequence[AudioSource], texts: str | Sequence[str]) -> torch.Tensor:
        """Cosine similarity of every clip with every text, ``(n_audio, n_text)``."""
        return self.embed_audio(audio) @ self.embed_text(texts).T

    def zero_shot(self, audio: AudioSource | Sequence[AudioSource], labels: Sequence[str],
                  template: str = DEFAULT_TEMPLATE, multi_label: bool = False,
                  batch_size: int = 32) -> torch.Tensor:
        """Class probabilities ``(n_audio, n_labels)`` from the similarity of each clip with each label's text.

        ``template`` turns a label into a text (``"{label}"`` marks where; see `TEMPLATES`). Single-label
        tasks get a softmax over the labels, multi-label tasks an independent sigmoid per label.
        """
        texts = self.label_texts(labels, template)
        return self.zero_shot_embeddings(self.embed_audio(audio, batch_size), texts, multi_label)

    @staticmethod
    def label_texts(labels: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
        """Each label put into ``template`` (checked first, so that a bad template fails before any audio)."""
        labels = list(labels)
        if not labels:
            raise PengiInputError("labels", "no class labels given")
        if "{label}" not in template:
            raise PengiInputError("template", f"must contain '{{label}}', got {template!r}")
        return [template.format(label=label) for label in labels]

    def zero_shot_embeddings(self, audio_embeds: torch.Tensor, texts: Sequence[str],
                             multi_label: bool = False) -> torch.Tensor:
        """`zero_shot` for clips already embedded (`embed_audio`), against the class texts (`label_texts`)."""
        text = self.embed_text(texts)
        with torch.inference_mode():
            logits = self.logits(audio_embeds.to(text), text)
        return logits.sigmoid() if multi_label else logits.softmax(dim=-1)


__all__ = ["CLAP", "CLAPOutput", "DEFAULT_TEMPLATE", "TEMPLATES"]
