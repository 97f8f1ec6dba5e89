"""Tokenizers the tests build from files shipped in pip packages (nothing is downloaded)."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from typing import Any


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: printable bytes map to themselves, the others to code points from 256."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def clip_tokenizer_from_bpe(bpe_path: str | os.PathLike, vocab_size: int = 49408):
    """A transformers CLIP tokenizer from CLIP's merges file (``bpe_simple_vocab_16e6.txt[.gz]``, which
    open_clip ships).

    The vocabulary is built as CLIP's own tokenizer builds it: the 256 byte characters, the same with
    ``</w>``, one entry per merge, then ``<|startoftext|>`` and ``<|endoftext|>``.
    """
    from transformers import CLIPTokenizer

    path = os.fspath(bpe_path)
    opener: Callable[..., Any] = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    n_merges = vocab_size - 2 * 256 - 2
    merges = [tuple(line.split()) for line in lines[1:1 + n_merges]]
    if len(merges) != n_merges or any(len(m) != 2 for m in merges):
        raise ValueError(f"{path}: expected {n_merges} merges of two symbols after the header line")
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != vocab_size:
        raise ValueError(f"{path}: the merges give {len(vocab)} distinct tokens, not {vocab_size}")
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
