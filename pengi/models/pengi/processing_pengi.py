"""`PengiProcessor`: user inputs (audio sources, prompt and answer strings) to model tensors, and ids back to text."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from pengi.audio import AudioClipFeatureExtractor, AudioSource
from pengi.data.collate import Collator
from pengi.errors import PengiInputError
from pengi.models.pengi.configuration_pengi import PengiConfig
from pengi.models.processing import AudioTextProcessor

RELEASE_PROMPT_SUFFIX = " <|endoftext|>"


class PengiProcessor(AudioTextProcessor):
    """The LM tokenizer, the prompt encoder's tokenizer (models with a prompt encoder) and the feature extractor
    of a Pengi model, with its config for the prompt settings.

    ``PengiProcessor(config, tokenizer, prompt_tokenizer)`` builds the feature extractor from the config. Saved
    in `ProcessorMixin`'s layout (the LM tokenizer at the top of the folder, ``prompt_tokenizer/``,
    processor_config.json); folders with the LM tokenizer in ``tokenizer/`` load too (`pengi.models.processing`).
    """

    config_class = PengiConfig

    def __init__(self, config: PengiConfig, tokenizer: PreTrainedTokenizerBase,
                 prompt_tokenizer: PreTrainedTokenizerBase | None = None,
                 feature_extractor: AudioClipFeatureExtractor | None = None):
        if config.prompt_encoder_config is not None and prompt_tokenizer is None:
            raise ValueError("this model has a prompt encoder, so it needs a prompt tokenizer")
        self._attach(config, feature_extractor, tokenizer=tokenizer, prompt_tokenizer=prompt_tokenizer)

    @classmethod
    def feature_extractor_for(cls, config: PengiConfig) -> AudioClipFeatureExtractor:
        """Mono, long clips cropped by ``long_audio``, short ones repeated to fill the window; a variable-length
        audio tower (SLAP's) takes each clip whole up to its max_seconds. The release mode concatenates channels
        and crops at random (seeded by ``release_crop_seed``)."""
        release = config.compat == "pengi-release"
        return AudioClipFeatureExtractor(
            sampling_rate=config.sample_rate, clip_samples=config.clip_samples, mix="concat" if release else "mean",
            crop="random" if release else config.long_audio, pad="none" if config.variable_length else "repeat",
            crop_seed=config.release_crop_seed if release else None)

    @classmethod
    def tokenizer_names(cls, config: PengiConfig) -> list[str]:
        return ["tokenizer"] + (["prompt_tokenizer"] if config.prompt_encoder_config is not None else [])

    # ----- text -----
    @staticmethod
    def check_prompts(prompts: Sequence[str], names: Sequence[str] | None = None) -> None:
        """Raise `PengiInputError` for a prompt that is not a non-empty string."""
        for i, p in enumerate(prompts):
            name = names[i] if names else f"prompt #{i}"
            if not isinstance(p, str):
                raise PengiInputError(name, f"prompts must be strings, got {type(p).__name__}")
            if not p.strip():
                raise PengiInputError(name, "prompt is empty")

    def prompts(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize prompts for the prompt encoder, or for the LM's embedding when there is none."""
        self.check_prompts(prompts)
        cfg = self.config
        tok = self.prompt_tokenizer or self.tokenizer
        limit = cfg.prompt_max_length
        release = cfg.compat == "pengi-release"
        if release and self.prompt_tokenizer is None:
            texts = [p + RELEASE_PROMPT_SUFFIX for p in prompts]
        else:
            texts = list(prompts)
        self._warn_truncated(tok, texts, limit)
        if release and self.prompt_tokenizer is None:
            # The release pads GPT-2 ids with 0 ("!") to a fixed length and lets the mapper see the padding.
            rows = [tok(t)["input_ids"][:limit] for t in texts]
            ids = torch.tensor([r + [0] * (limit - len(r)) for r in rows])
            return {"prompt_input_ids": ids, "prompt_attention_mask": torch.ones_like(ids)}
        fixed = release or cfg.append_prompt_tokens  # a fixed length; appended tokens are padded on the left
        enc = tok(texts, padding="max_length" if fixed else True, truncation=True, max_length=limit,
                  return_tensors="pt", padding_side="left" if cfg.append_prompt_tokens else "right")
        return {"prompt_input_ids": enc["input_ids"], "prompt_attention_mask": enc["attention_mask"]}

    @staticmethod
    def _warn_truncated(tok: PreTrainedTokenizerBase, texts: Sequence[str], limit: int) -> None:
        for i, (text, ids) in enumerate(zip(texts, tok(list(texts))["input_ids"])):
            if len(ids) > limit:
                warnings.warn(f"prompt #{i} ({text[:40]!r}...) has {len(ids)} tokens, more than the prompt "
                              f"limit of {limit}; it was truncated", stacklevel=4)

    def answers(self, answers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize target texts, each followed by the end-of-text token, right-padded, for training."""
        tok = self.tokenizer
        rows = [tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for a in answers]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def __call__(self, audio: Sequence[AudioSource] | None = None, prompts: Sequence[str] | None = None,
                 answers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Everything `Pengi.forward` takes, for a batch of examples."""
        batch: dict[str, torch.Tensor] = {}
        if audio is not None:
            batch.update(self.audio(list(audio)))
        if prompts is not None:
            batch.update(self.prompts(prompts))
        if answers is not None:
            batch.update(self.answers(answers))
        return batch

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


class PengiCollator(Collator):
    """Batch waveforms and tokenize prompts and answers with the model's processor; drops unreadable rows."""

    def texts(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {**self.processor.prompts([x["prompt"] for x in items]),
                **self.processor.answers([x["answer"] for x in items])}
