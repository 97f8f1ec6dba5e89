"""The inference API that CLAP and SLAP share: text embeddings, similarity, and zero-shot classification.

A model using `ContrastiveMixin` has ``text_encoder``, ``logit_scale``, ``config.max_logit_scale``, a processor
with ``texts(...)``, and ``embed_audio(audio, batch_size=...)`` returning L2-normalised embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pengi.audio import AudioSource
from pengi.errors import PengiInputError
from pengi.models.pretrained import as_list
from pengi.modules.contrastive import contrastive_logits, initial_logit_scale

DEFAULT_TEMPLATE = "This is a sound of {label}"
TEMPLATES = {
    "sound": DEFAULT_TEMPLATE,
    "emotion": "this person is feeling {label}",
    "keyword": "{label}",
    "speaker_count": "{label} persons speaking",
}
"""The CLAP paper's zero-shot templates, by task."""


class ContrastiveMixin:
    """`embed_text` (cached by text in eval mode), `similarity`, `zero_shot` and the logits they rest on."""

    _text_cache: dict[str, torch.Tensor]

    def _init_weights(self, module: torch.nn.Module) -> None:
        super()._init_weights(module)
        if module is self:  # the learnable temperature starts at the config's
            with torch.no_grad():
                self.logit_scale.fill_(initial_logit_scale(self.config.temperature))

    def train(self, mode: bool = True):
        self._text_cache.clear()  # weights are about to change: cached text embeddings go stale
        return super().train(mode)

    def text_embedding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids -> L2-normalised embeddings ``(batch, d_proj)``."""
        return F.normalize(self.text_encoder(input_ids.to(self.device), attention_mask.to(self.device)), dim=-1)

    def logits(self, audio_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarities ``(n_audio, n_text)``, as trained (temperature clamped)."""
        return contrastive_logits(audio_embeds, text_embeds, self.logit_scale, self.config.max_logit_scale)

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
        return self.zero_shot_embeddings(self.embed_audio(audio, batch_size=batch_size), texts, multi_label)

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


__all__ = ["DEFAULT_TEMPLATE", "TEMPLATES", "ContrastiveMixin"]
