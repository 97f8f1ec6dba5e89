"""`CLAPProcessor`: audio sources and texts to `CLAP` tensors."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from pengi.audio import AudioSource, ClipLoader
from pengi.data.collate import Collator
from pengi.errors import PengiInputError
from pengi.models.clap.configuration_clap import CLAPConfig

TOKENIZER_DIR = "tokenizer"


class CLAPProcessor(ClipLoader):
    """The text encoder's tokenizer and the model's audio settings; the tokenizer is saved as ``tokenizer/``."""

    def __init__(self, config: CLAPConfig, tokenizer: PreTrainedTokenizerBase):
        if config.compat == "msclap":  # the release's wrapper: channels concatenated, a random crop of long clips
            generator = None
            if config.release_crop_seed is not None:
                generator = torch.Generator().manual_seed(config.release_crop_seed)
            super().__init__(config.sample_rate, config.clip_samples, mix="concat", crop="random",
                             pad=config.short_audio, generator=generator)
        else:
            super().__init__(config.sample_rate, config.clip_samples, crop=config.long_audio, pad=config.short_audio)
        self.config = config
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if config.compat == "msclap" and config.text_pooling == "last" and tokenizer.pad_token_id != 0:
            raise ValueError("compat='msclap' pools at the count of non-zero ids, so the tokenizer must pad with "
                             f"id 0 ('!' for GPT-2), not {tokenizer.pad_token_id}")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, config: CLAPConfig, **kwargs) -> CLAPProcessor:
        return cls(config, AutoTokenizer.from_pretrained(path, subfolder=TOKENIZER_DIR, **kwargs))

    def save_pretrained(self, path: str | os.PathLike) -> None:
        self.tokenizer.save_pretrained(os.path.join(path, TOKENIZER_DIR))

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
