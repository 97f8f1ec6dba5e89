"""`CLAPProcessor`: audio sources and texts to `CLAP` tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from pengi.audio import AudioClipFeatureExtractor, AudioSource
from pengi.data.collate import Collator
from pengi.errors import PengiInputError
from pengi.models.clap.configuration_clap import CLAPConfig
from pengi.models.processing import AudioTextProcessor


class CLAPProcessor(AudioTextProcessor):
    """The text encoder's tokenizer and the feature extractor of a CLAP model, with its config for the text
    settings. ``CLAPProcessor(config, tokenizer)`` builds the feature extractor from the config; saved in
    `ProcessorMixin`'s layout, and folders with the tokenizer in ``tokenizer/`` load too (`pengi.models.processing`).

    transformers' ``zero-shot-audio-classification`` pipeline takes its ``tokenizer`` and ``feature_extractor``.
    """

    config_class = CLAPConfig

    def __init__(self, config: CLAPConfig, tokenizer: PreTrainedTokenizerBase,
                 feature_extractor: AudioClipFeatureExtractor | None = None):
        self._attach(config, feature_extractor, tokenizer=tokenizer)
        if config.compat == "msclap" and config.text_pooling == "last" and tokenizer.pad_token_id != 0:
            raise ValueError("compat='msclap' pools at the count of non-zero ids, so the tokenizer must pad with "
                             f"id 0 ('!' for GPT-2), not {tokenizer.pad_token_id}")

    @classmethod
    def feature_extractor_for(cls, config: CLAPConfig) -> AudioClipFeatureExtractor:
        """Mono, long clips cropped by ``long_audio``, short ones padded by ``short_audio``; msclap's release wrapper
        (``compat="msclap"``) concatenates channels and crops long clips at random (seeded by ``release_crop_seed``)."""
        msclap = config.compat == "msclap"
        return AudioClipFeatureExtractor(
            sampling_rate=config.sample_rate, clip_samples=config.clip_samples, mix="concat" if msclap else "mean",
            crop="random" if msclap else config.long_audio, pad=config.short_audio,
            crop_seed=config.release_crop_seed if msclap else None)

    def texts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize texts (with the config's suffix), right-padded and truncated at ``text_max_length``."""
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise PengiInputError(f"text #{i}", f"texts must be non-empty strings, got {t!r}")
        suffix = self.config.text_suffix
        enc = self.tokenizer([t + suffix for t in texts], padding=True, truncation=True,
                             max_length=self.config.text_max_length, return_tensors="pt", padding_side="right")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def __call__(self, audio: Sequence[AudioSource] | None = None,
                 texts: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Everything `CLAP.forward` takes, for a batch of (audio, text) pairs."""
        batch: dict[str, torch.Tensor] = {}
        if audio is not None:
            batch["waveforms"] = self.waveforms(list(audio))
        if texts is not None:
            batch.update(self.texts(texts))
        return batch


class CLAPCollator(Collator):
    """Stack waveforms and tokenize the texts (each row's ``answer``) for `CLAP`; drops unreadable rows."""

    def texts(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.processor.texts([x["answer"] for x in items])
