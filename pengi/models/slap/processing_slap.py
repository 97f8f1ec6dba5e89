"""`SLAPProcessor`: audio of any length (up to ``max_seconds``) and texts to `SLAP` tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from pengi.audio import AudioClipFeatureExtractor, AudioSource
from pengi.data.collate import Collator
from pengi.errors import PengiInputError
from pengi.models.processing import AudioTextProcessor
from pengi.models.slap.configuration_slap import SLAPConfig


class SLAPProcessor(AudioTextProcessor):
    """One tokenizer for the text encoder and the caption decoder, and the feature extractor, with the model's
    config for the text settings. Audio is kept whole (cropped only beyond ``max_seconds``); batches are
    right-padded with ``waveform_lengths``. Saved in `ProcessorMixin`'s layout; folders with the tokenizer in
    ``tokenizer/`` load too (`pengi.models.processing`)."""

    config_class = SLAPConfig

    def __init__(self, config: SLAPConfig, tokenizer: PreTrainedTokenizerBase,
                 feature_extractor: AudioClipFeatureExtractor | None = None):
        self._attach(config, feature_extractor, tokenizer=tokenizer)
        self.bos_id = _first_id(tokenizer, ("bos_token_id", "cls_token_id", "eos_token_id"))
        self.eos_id = _first_id(tokenizer, ("eos_token_id", "sep_token_id"))
        if config.caption_weight > 0 and len(tokenizer) > config.vocab_size:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the caption decoder's vocab_size is "
                             f"{config.vocab_size}: build the config with vocab_size=len(tokenizer)")

    @classmethod
    def feature_extractor_for(cls, config: SLAPConfig) -> AudioClipFeatureExtractor:
        """Mono, each clip whole up to ``max_seconds``, longer ones cropped by ``long_audio``."""
        return AudioClipFeatureExtractor(sampling_rate=config.sample_rate, clip_samples=config.clip_samples,
                                         crop=config.long_audio, pad="none")

    @staticmethod
    def _check(texts: Sequence[str]) -> None:
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise PengiInputError(f"text #{i}", f"texts must be non-empty strings, got {t!r}")

    def texts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Text-encoder input: right-padded, truncated at ``text_max_length``."""
        self._check(texts)
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.config.text_max_length,
                             return_tensors="pt", padding_side="right")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def captions(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Decoder input: ``[bos] tokens [eos]``, at most ``caption_max_length``, right-padded."""
        self._check(texts)
        limit = self.config.caption_max_length - 2
        rows = [[self.bos_id] + self.tokenizer(t, add_special_tokens=False)["input_ids"][:limit] + [self.eos_id]
                for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
        return {"caption_ids": ids, "caption_mask": mask}

    def decode(self, ids: list[list[int]]) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def __call__(self, audio: Sequence[AudioSource] | None = None,
                 texts: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Everything `SLAP.forward` takes for (audio, caption) pairs."""
        batch: dict[str, torch.Tensor] = {}
        if audio is not None:
            batch.update(self.audio(list(audio)))
        if texts is not None:
            batch.update(self.texts(texts))
            batch.update(self.captions(texts))
        return batch


def _first_id(tokenizer: PreTrainedTokenizerBase, names: Sequence[str]) -> int:
    for name in names:
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise ValueError(f"the tokenizer has none of {names}: the caption decoder needs start and end tokens")


class SLAPCollator(Collator):
    """Right-pad clips (with ``waveform_lengths``) and tokenize each row's answer, its caption, for the text
    encoder and for the caption decoder (`SLAPProcessor`); drops unreadable rows."""

    def texts(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        texts = [x["answer"] for x in items]
        return {**self.processor.texts(texts), **self.processor.captions(texts)}
