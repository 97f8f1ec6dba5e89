"""Tokenizers for converted models: loaded from a folder or the local hub cache, and checked against the weights."""

from __future__ import annotations

import os

from pengi.conversion.keymap import ConversionError


def load_tokenizer(folder: str | os.PathLike | None, hub_name: str, option: str = "--tokenizer-dir"):
    """A tokenizer from ``folder`` (anything ``AutoTokenizer.from_pretrained`` loads) or from the hub cache."""
    from transformers import AutoTokenizer

    if folder is not None and not os.path.isdir(folder):
        raise ConversionError(f"{option}: {folder} is not a folder (it must hold a tokenizer loadable by "
                              "AutoTokenizer.from_pretrained)")
    return AutoTokenizer.from_pretrained(hub_name if folder is None else os.fspath(folder))


def check_tokenizer(name: str, tok, vocab_size: int, eos: int | None = None) -> None:
    """An empty or wrong tokenizer would convert "fine" and give garbage, so check its size and what it encodes."""
    if len(tok) != vocab_size or (eos is not None and tok.eos_token_id != eos):
        detail = f" and end-of-text id {tok.eos_token_id}" if eos is not None else ""
        want = f" and id {eos}" if eos is not None else ""
        raise ConversionError(f"{name} tokenizer has {len(tok)} tokens{detail}; the checkpoint needs "
                              f"{vocab_size} tokens{want}")
    if len(tok("a dog barks", add_special_tokens=False)["input_ids"]) < 2:
        raise ConversionError(f"{name} tokenizer does not split text into tokens (empty vocabulary?)")
