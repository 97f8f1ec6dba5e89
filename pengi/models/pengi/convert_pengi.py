"""Convert the published Pengi checkpoints (``base.pth``, ``base_no_text_enc.pth``) into a pengi model folder.

    pengi convert pengi-original base.pth OUT_DIR [--tokenizers DIR]

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

Decoding stops where the release's does: its beam search stops at the first id of ``" <|endoftext|>"``, GPT-2's
lone space (220), which its training answers put before end-of-text, so the converted model stops at 220 and at
end-of-text (50256) itself (`PengiConfig.stop_token_ids`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from pengi.conversion import (
    OBSOLETE_BUFFER_RULES,
    ConversionError,
    ConversionReport,
    HTSATKeys,
    KeyMapper,
    build_converted,
    check_tokenizer,
    load_release_state_dict,
    load_tokenizer,
    strip_module_prefix,
)
from pengi.models.pengi.configuration_pengi import PengiConfig
from pengi.models.pengi.presets import pengi_base, pengi_base_no_text_enc

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
GPT2_EOS = 50256
RELEASE_STOP = (220, GPT2_EOS)  # the release stops at the first id of " <|endoftext|>" (a lone space), and at EOS

__all__ = ["ConversionError", "ConversionReport", "convert", "convert_state_dict", "load_release_state_dict",
           "release_config", "strip_module_prefix"]


# ---------------------------------------------------------------------------------------------- config
def release_config(state_dict: Mapping[str, torch.Tensor], **overrides: Any) -> PengiConfig:
    """`PengiConfig` of a release checkpoint: pengi-base (CLIP text encoder) or base_no_text_enc, compat mode."""
    has_text_encoder = any(k.startswith("caption_encoder.") for k in state_dict)
    values: dict[str, Any] = dict(compat="pengi-release", stop_token_ids=list(RELEASE_STOP),
                                  **mapper_shape(state_dict, "caption_decoder.audio_project."))
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
def release_mapper(source: Mapping[str, torch.Tensor], config: PengiConfig) -> KeyMapper:
    """The key rules of the release (``source`` with ``module.`` already stripped)."""
    return KeyMapper(source, PREFIX_RENAMES, OBSOLETE_BUFFER_RULES,
                     htsat=HTSATKeys(SRC_HTSAT, DST_HTSAT, config.audio_config), frontend=SRC_HTSAT,
                     n_fft=config.n_fft, win_length=config.win_length)


def convert_state_dict(source: Mapping[str, torch.Tensor], config: PengiConfig,
                       target: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map a release state dict onto ``target`` (our model's state dict: names, shapes and dtypes). Raises
    `ConversionError` naming every unknown, unfilled or mismatched key."""
    return release_mapper(source, config).run().finish(target, tied=LM_TIED)


# ---------------------------------------------------------------------------------------------- tokenizers
def load_tokenizers(config: PengiConfig, tokenizers: str | os.PathLike | None = None):
    """GPT-2 and (for pengi-base) CLIP tokenizers from ``DIR/gpt2`` and ``DIR/clip``, or from the hub cache."""
    def load(sub: str, hub_name: str):
        return load_tokenizer(None if tokenizers is None else os.path.join(os.fspath(tokenizers), sub), hub_name,
                              "--tokenizers")

    gpt2 = load("gpt2", HUB_GPT2_TOKENIZER)
    check_tokenizer("gpt2", gpt2, config.lm_config.vocab_size, eos=GPT2_EOS)
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
    from pengi.models.pengi.modeling_pengi import Pengi
    from pengi.models.pengi.processing_pengi import PengiProcessor

    source = load_release_state_dict(checkpoint)
    config = release_config(source)
    gpt2, clip = load_tokenizers(config, tokenizers)
    model, report = build_converted(Pengi, config, release_mapper(source, config), tied=LM_TIED)
    del source
    model.processor = PengiProcessor(config, gpt2, clip)
    model.save_pretrained(out_dir)
    return report
