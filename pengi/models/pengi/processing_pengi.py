"""`PengiProcessor`: user inputs (audio sources, prompt and answer strings) to model tensors, and ids back to text."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from pengi.audio import AudioSource, ClipLoader
from pengi.data.collate import Collator
from pengi.errors import PengiInputError
from pengi.models.pengi.configuration_pengi import PengiConfig

TOKENIZER_DIR = "tokenizer"
PROMPT_TOKENIZER_DIR = "prompt_tokenizer"
RELEASE_PROMPT_SUFFIX = " <|endoftext|>"


class PengiProcessor(ClipLoader):
    """Holds the LM tokenizer, the prompt encoder's tokenizer (if any) and the audio settings of a model.

    Saved beside the weights as ``tokenizer/`` and ``prompt_tokenizer/``.
    """

    def __init__(self, config: PengiConfig, tokenizer: PreTrainedTokenizerBase,
                 prompt_tokenizer: PreTrainedTokenizerBase | None = None):
        if config.prompt_encoder_config is not None and prompt_tokenizer is None:
            raise ValueError("this model has a prompt encoder, so it needs a prompt tokenizer")
        self.config = config
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.prompt_tokenizer = prompt_tokenizer
        compat = config.compat == "pengi-release"
        generator = None
        if compat and config.release_crop_seed is not None:
            generator = torch.Generator().manual_seed(config.release_crop_seed)
        # A variable-length audio tower (SLAP's) takes each clip whole, up to its max_seconds, in padded batches.
        super().__init__(config.sample_rate, config.clip_samples, mix="concat" if compat else "mean",
                         crop="random" if compat else config.long_audio, generator=generator,
                         pad="none" if config.variable_length else "repeat")

    # ----- saving and loading -----
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, config: PengiConfig, **kwargs) -> PengiProcessor:
        tokenizer = AutoTokenizer.from_pretrained(path, subfolder=TOKENIZER_DIR, **kwargs)
        prompt_tokenizer = None
        if config.prompt_encoder_config is not None:
            prompt_tokenizer = AutoTokenizer.from_pretrained(path, subfolder=PROMPT_TOKENIZER_DIR, **kwargs)
        return cls(config, tokenizer, prompt_tokenizer)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        self.tokenizer.save_pretrained(os.path.join(path, TOKENIZER_DIR))
        if self.prompt_tokenizer is not None:
            self.prompt_tokenizer.save_pretrained(os.path.join(path, PROMPT_TOKENIZER_DIR))

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
