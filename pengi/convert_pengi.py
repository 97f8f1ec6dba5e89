"""Convert the published Pengi checkpoints (``base.pth``, ``base_no_text_enc.pth``) into a pengi model folder.

    pengi convert pengi-original base.pth OUT_DIR [--tokenizers DIR]
    python -m pengi.convert_pengi base.pth OUT_DIR [--tokenizers DIR]

The file is read with ``torch.load(weights_only=True)`` only. Every key of the release is either mapped onto
our model or dropped by an explicit rule, and every key of our model must be filled; anything else stops the
conversion with a `ConversionError` that names the keys. Buffers that our model computes itself (the STFT
kernels, the shifted-window attention masks, the relative position index) are checked against what it computes.

Mapping (release -> pengi):

- ``audio_encoder.base.htsat.*`` -> transformers' ``ClapAudioModel`` in ``audio_encoder.base.audio_encoder.*``:
  ``bn0`` -> ``batch_norm``; in each Swin block ``norm1``/``norm2`` -> ``layernorm_before``/``layernorm_after``,
  the fused ``attn.qkv`` -> ``attention.self.{query,key,value}``, ``attn.proj`` -> ``attention.output.dense``,
  ``mlp.fc1``/``mlp.fc2`` -> ``intermediate.dense``/``output.dense``; ``patch_embed``, ``downsample`` and
  ``norm`` keep their names. ``logmel_extractor.melW`` [n_freqs, n_mels] -> the front end's ``mel_filters``.
  Dropped: the STFT conv kernels (checked to be a Hann-windowed DFT; our front end uses the same window),
  the ``attn_mask`` buffers (checked), the TSCAM head (``tscam_conv``, ``head``: unused for the embedding).
- ``audio_encoder.projection`` -> same name; ``caption_encoder.base`` / ``clip_text_projection`` /
  ``projection`` -> ``prompt_encoder.*``; ``caption_decoder.gpt`` -> ``lm``;
  ``caption_decoder.audio_project`` / ``text_project`` -> ``audio_mapper`` / ``text_mapper``.
- Dropped as obsolete (written by transformers 4.28): ``caption_encoder.base.embeddings.position_ids`` and
  GPT-2's ``attn.bias`` / ``attn.masked_bias``.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .configuration_pengi import PengiConfig
from .conversion import (
    OBSOLETE_BUFFER_RULES,
    ConversionError,
    ConversionReport,
    HTSATKeys,
    KeyMapper,
    check_tokenizer,
    load_release_state_dict,
    load_tokenizer,
    run_conversion,
    strip_module_prefix,
)
from .presets import pengi_base, pengi_base_no_text_enc

log = logging.getLogger("pengi")

HUB_GPT2_TOKENIZER = "gpt2"
HUB_CLIP_TOKENIZER = "openai/clip-vit-base-patch16"

SRC_HTSAT = "audio_encoder.base.htsat."
DST_HTSAT = "audio_encoder.base.audio_encoder."

# Plain renames by prefix (the HTSAT is mapped by HTSATKeys).
PREFIX_RENAMES: tuple[tuple[str, str], ...] = (
    ("audio_encoder.projection.", "audio_encoder.projection."),
    ("caption_encoder.base.", "prompt_encoder.base."),
    ("caption_encoder.clip_text_projection.", "prompt_encoder.clip_text_projection."),
    ("caption_encoder.projection.", "prompt_encoder.projection."),
    ("caption_decoder.gpt.", "lm."),
    ("caption_decoder.audio_project.", "audio_mapper."),
    ("caption_decoder.text_project.", "text_mapper."),
)
LM_TIED = (("lm.lm_head.weight", "lm.transformer.wte.weight"),)

__all__ = ["ConversionError", "ConversionReport", "convert", "convert_state_dict", "load_release_state_dict",
           "release_config", "strip_module_prefix"]


# ---------------------------------------------------------------------------------------------- config
def release_config(state_dict: Mapping[str, torch.Tensor], **overrides: Any) -> PengiConfig:
    """`PengiConfig` of a release checkpoint: pengi-base (CLIP text encoder) or base_no_text_enc, compat mode."""
    has_text_encoder = any(k.startswith("caption_encoder.") for k in state_dict)
    values: dict[str, Any] = dict(compat="pengi-release", **mapper_shape(state_dict, "caption_decoder.audio_project."))
    text_const = state_dict.get("caption_decoder.text_project.prefix_const")
    if text_const is not None and text_const.ndim == 2:
        values["text_prefix_length"] = text_const.shape[0]
    proj = state_dict.get("audio_encoder.projection.linear1.weight")
    if proj is not None and proj.ndim == 2:
        values["d_proj"] = proj.shape[0]
    values.update(overrides)
    return (pengi_base if has_text_encoder else pengi_base_no_text_enc)(**values)


def mapper_shape(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """Prefix length, MLP ratio and depth of a ClipCap mapper stored under ``prefix``, as `PengiConfig` values."""
    values: dict[str, Any] = {}
    const = state_dict.get(prefix + "prefix_const")
    if const is not None and const.ndim == 2:
        values["audio_prefix_length"] = const.shape[0]
        fc1 = state_dict.get(prefix + "transformer.layers.0.mlp.fc1.weight")
        if fc1 is not None and fc1.ndim == 2:
            values["mapper_mlp_ratio"] = fc1.shape[0] / const.shape[1]
    layer_re = re.compile(re.escape(prefix) + r"transformer\.layers\.(\d+)\.")
    layers = {int(m.group(1)) for k in state_dict if (m := layer_re.match(k))}
    if layers:
        values["mapper_layers"] = max(layers) + 1
    return values


# ---------------------------------------------------------------------------------------------- mapping
def convert_state_dict(source: Mapping[str, torch.Tensor], config: PengiConfig,
                       target: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map a release state dict (``module.`` already stripped) onto ``target`` (our model's state dict: names,
    shapes and dtypes). Raises `ConversionError` naming every unknown, unfilled or mismatched key."""
    mapper = KeyMapper(source, PREFIX_RENAMES, OBSOLETE_BUFFER_RULES,
                       htsat=HTSATKeys(SRC_HTSAT, DST_HTSAT, config.audio_config), frontend=SRC_HTSAT,
                       n_fft=config.n_fft, win_length=config.win_length)
    return mapper.run().finish(target, tied=LM_TIED)


# ---------------------------------------------------------------------------------------------- tokenizers
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
    """A transformers CLIP tokenizer from CLIP's merges file (``bpe_simple_vocab_16e6.txt[.gz]``).

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
        raise ConversionError(f"{path}: expected {n_merges} merges of two symbols after the header line")
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != vocab_size:
        raise ConversionError(f"{path}: the merges give {len(vocab)} distinct tokens, not {vocab_size}")
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def load_tokenizers(config: PengiConfig, tokenizers: str | os.PathLike | None = None):
    """GPT-2 and (for pengi-base) CLIP tokenizers from ``DIR/gpt2`` and ``DIR/clip``, or from the hub cache."""
    def load(sub: str, hub_name: str):
        return load_tokenizer(None if tokenizers is None else os.path.join(os.fspath(tokenizers), sub), hub_name,
                              "--tokenizers")

    gpt2 = load("gpt2", HUB_GPT2_TOKENIZER)
    check_tokenizer("gpt2", gpt2, config.lm_config.vocab_size, eos=50256)
    clip = None
    if config.prompt_encoder_config is not None:
        clip = load("clip", HUB_CLIP_TOKENIZER)
        check_tokenizer("clip", clip, config.prompt_encoder_config.vocab_size,
                        eos=config.prompt_encoder_config.eos_token_id)
    return gpt2, clip


# ---------------------------------------------------------------------------------------------- conversion
def convert(checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
            tokenizers: str | os.PathLike | None = None) -> ConversionReport:
    """Convert a release checkpoint into a folder that `Pengi.from_pretrained(out_dir)` loads."""
    from .modeling_pengi import Pengi
    from .processing_pengi import PengiProcessor

    source = load_release_state_dict(checkpoint)
    config = release_config(source)
    with torch.device("meta"):
        model = Pengi(config)  # names, shapes and dtypes only; the checkpoint fills every tensor
    target = model.state_dict()
    state_dict, report = convert_state_dict(source, config, target)
    del source
    gpt2, clip = load_tokenizers(config, tokenizers)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.tie_weights()
    model.processor = PengiProcessor(config, gpt2, clip)
    model.save_pretrained(out_dir)
    return report


def add_convert_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``pengi-original`` to the subparsers of ``pengi convert``; its ``func(args)`` returns an exit code."""
    p = subparsers.add_parser("pengi-original", help="convert a published Pengi checkpoint (base.pth, "
                              "base_no_text_enc.pth) into a pengi model folder",
                              description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="the release's .pth file")
    p.add_argument("out_dir", help="folder to write (config.json, model.safetensors, tokenizers)")
    p.add_argument("--tokenizers", default=None, metavar="DIR",
                   help="folder with gpt2/ and (for base) clip/ tokenizers loadable by AutoTokenizer; "
                        f"default: the hub names {HUB_GPT2_TOKENIZER!r} and {HUB_CLIP_TOKENIZER!r}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_conversion(lambda: convert(args.checkpoint, args.out_dir, args.tokenizers), args.checkpoint,
                          args.out_dir, "Pengi")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pengi.convert_pengi CHECKPOINT OUT_DIR [--tokenizers DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m pengi.convert_pengi", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
