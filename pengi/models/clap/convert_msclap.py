"""Convert the published msclap checkpoints into pengi model folders.

    pengi convert msclap {2022,2023,clapcap} FILE OUT_DIR [--tokenizer-dir DIR]

**msclap** (``CLAP_weights_2022.pth``, ``CLAP_weights_2023.pth``, ``clapcap_weights_2023.pth``): pickles read
with ``torch.load(weights_only=True)`` only; the state dict is under ``"model"``.

- 2022 -> `CLAP`: CNN14 (``audio_encoder.base.{bn0,conv_block*,fc1}`` keep their names; ``fc_audioset``, the
  AudioSet classifier, is dropped) + BERT ``[CLS]`` (``caption_encoder.base`` -> ``text_encoder.base``).
- 2023 -> `CLAP`: HTSAT (``audio_encoder.base.htsat`` -> transformers' ``ClapAudioModel``, as for Pengi) + GPT-2
  pooled at its last token (``caption_encoder.base`` -> ``text_encoder.base``); texts get ``" <|endoftext|>"``
  appended and are padded with ``"!"`` (id 0), as msclap does.
- clapcap -> `Pengi` with no prompt (``text_prefix_length=0``): ``clap.base.htsat`` -> the HTSAT,
  ``clap.projection`` -> ``audio_encoder.projection``, ``clap_project`` (ClipCap mapper) -> ``audio_mapper``,
  ``gpt`` -> ``lm``. The audio embedding is L2-normalised before the mapper and GPT-2 continues the 40-token
  audio prefix. msclap stops decoding at the first token of ``" <|endoftext|>"``, which is GPT-2's lone space
  (id 220); the converted model stops there and at the end-of-text token itself (`PengiConfig.stop_token_ids`).

The torchlibrosa front end's stored mel filterbank (``logmel_extractor.melW`` [513, 64]) is kept; its STFT
kernels are checked to be a periodic-Hann DFT and dropped. Projections, ``logit_scale`` keep their names.
Converted CLAP models use ``compat="msclap"`` (stereo concatenated, random crop of long clips, msclap's
text pooling rule); set ``compat`` to null in ``config.json`` for pengi's corrected behaviour.
Text-model shapes are read off the weights; the number of attention heads is hidden size / 64 (BERT base,
GPT-2). Tokenizers come from ``--tokenizer-dir`` or the hub cache (``bert-base-uncased``, ``gpt2``).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from transformers import BertConfig, GPT2Config, PreTrainedConfig

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
)
from pengi.models.clap.presets import clap_htsat_gpt2, clap_paper
from pengi.models.pengi.convert_pengi import GPT2_EOS, LM_TIED, RELEASE_STOP, mapper_shape
from pengi.models.pengi.presets import pengi_base_no_text_enc
from pengi.modules.configuration_cnn14 import Cnn14Config
from pengi.modules.configuration_encoders import MAX_LOGIT_SCALE

log = logging.getLogger("pengi")

MSCLAP_VERSIONS = ("2022", "2023", "clapcap")
HUB_TOKENIZERS = {"2022": "bert-base-uncased", "2023": "gpt2", "clapcap": "gpt2"}
HEAD_WIDTH = 64  # BERT base and GPT-2 use 64-wide attention heads; the weights do not record the head count

MSCLAP_CLAP_RENAMES = (
    ("audio_encoder.projection.", "audio_encoder.projection."),
    ("caption_encoder.base.", "text_encoder.base."),
    ("caption_encoder.projection.", "text_encoder.projection."),
    ("logit_scale", "logit_scale"),
)
CNN14_DROPS = ((re.compile(r"audio_encoder\.base\.fc_audioset\.(weight|bias)"),
                "CNN14's AudioSet classifier, unused for the embedding"),)


# ---------------------------------------------------------------------------------------------- shapes
def _shape(sd: Mapping[str, torch.Tensor], key: str) -> torch.Size:
    if key not in sd:
        raise ConversionError(f"{key} is missing: the model's shape cannot be read off the checkpoint")
    return sd[key].shape


def _count(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    if not found:
        raise ConversionError(f"no keys match {pattern!r}: the model's depth cannot be read off the checkpoint")
    return max(found) + 1


def bert_config(sd: Mapping[str, torch.Tensor], prefix: str) -> BertConfig:
    """A BERT config with the shapes of the weights under ``prefix``."""
    vocab, hidden = _shape(sd, prefix + "embeddings.word_embeddings.weight")
    return BertConfig(vocab_size=vocab, hidden_size=hidden, num_attention_heads=max(hidden // HEAD_WIDTH, 1),
                      num_hidden_layers=_count(sd, re.escape(prefix) + r"encoder\.layer\.(\d+)\."),
                      intermediate_size=_shape(sd, prefix + "encoder.layer.0.intermediate.dense.weight")[0],
                      max_position_embeddings=_shape(sd, prefix + "embeddings.position_embeddings.weight")[0],
                      type_vocab_size=_shape(sd, prefix + "embeddings.token_type_embeddings.weight")[0])


def gpt2_config(sd: Mapping[str, torch.Tensor], prefix: str) -> GPT2Config:
    """A GPT-2 config with the shapes of the weights under ``prefix`` (``wte``, ``wpe``, ``h.N``)."""
    vocab, width = _shape(sd, prefix + "wte.weight")
    inner = _shape(sd, prefix + "h.0.mlp.c_fc.weight")[1]
    eos = min(GPT2_EOS, vocab - 1)
    return GPT2Config(vocab_size=vocab, n_embd=width, n_head=max(width // HEAD_WIDTH, 1),
                      n_layer=_count(sd, re.escape(prefix) + r"h\.(\d+)\."),
                      n_positions=_shape(sd, prefix + "wpe.weight")[0],
                      n_inner=None if inner == 4 * width else inner, bos_token_id=eos, eos_token_id=eos)


def _logit_scale_limit(scale: torch.Tensor | None) -> float:
    """Our logits clamp ``exp(logit_scale)``; keep the clamp above the stored value so inference is unchanged."""
    if scale is None or scale.numel() != 1:
        return MAX_LOGIT_SCALE
    return max(MAX_LOGIT_SCALE, math.ceil(math.exp(float(scale))))


def msclap_config(version: str, sd: Mapping[str, torch.Tensor], **overrides: Any) -> PreTrainedConfig:
    """The `CLAPConfig` (2022, 2023) or `PengiConfig` (clapcap) of an msclap checkpoint."""
    values: dict[str, Any] = {}
    if version == "clapcap":
        values.update(mapper_shape(sd, "clap_project."))
        values.update(d_proj=_shape(sd, "clap.projection.linear1.weight")[0],
                      lm_config=gpt2_config(sd, "gpt.transformer."), text_prefix_length=0, mapper_heads=8,
                      f_max=14000.0, num_beams=5, max_new_tokens=67, stop_token_ids=list(RELEASE_STOP),
                      compat="pengi-release")
        values.update(overrides)
        return pengi_base_no_text_enc(**values)
    values.update(d_proj=_shape(sd, "audio_encoder.projection.linear1.weight")[0], compat="msclap",
                  max_logit_scale=_logit_scale_limit(sd.get("logit_scale")), f_max=14000.0)
    if version == "2022":
        channels = [_shape(sd, f"audio_encoder.base.conv_block{i}.conv1.weight")[0] for i in range(1, 7)]
        values.update(audio_config=Cnn14Config(num_mel_bins=64, channels=channels),
                      text_config=bert_config(sd, "caption_encoder.base."))
        values.update(overrides)
        return clap_paper(**values)
    values.update(text_config=gpt2_config(sd, "caption_encoder.base."))
    values.update(overrides)
    return clap_htsat_gpt2(**values)


def msclap_mapper(version: str, sd: Mapping[str, torch.Tensor], config: PreTrainedConfig) -> KeyMapper:
    """The key rules of one msclap release."""
    if version == "2022":
        renames = (("audio_encoder.base.", "audio_encoder.base."),) + MSCLAP_CLAP_RENAMES
        return KeyMapper(sd, renames, CNN14_DROPS + OBSOLETE_BUFFER_RULES, frontend="audio_encoder.base.",
                         n_fft=config.n_fft, win_length=config.win_length)
    htsat_src = "clap.base.htsat." if version == "clapcap" else "audio_encoder.base.htsat."
    htsat = HTSATKeys(htsat_src, "audio_encoder.base.audio_encoder.", config.audio_config)
    renames = MSCLAP_CLAP_RENAMES if version == "2023" else (
        ("clap.projection.", "audio_encoder.projection."), ("clap_project.", "audio_mapper."), ("gpt.", "lm."))
    return KeyMapper(sd, renames, OBSOLETE_BUFFER_RULES, htsat=htsat, frontend=htsat_src, n_fft=config.n_fft,
                     win_length=config.win_length)


# ---------------------------------------------------------------------------------------------- writing
def convert_msclap(version: str, checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                   tokenizer_dir: str | os.PathLike | None = None, **overrides: Any) -> ConversionReport:
    """Convert an msclap checkpoint into a folder that `CLAP.from_pretrained` (2022, 2023) or
    `Pengi.from_pretrained` (clapcap) loads. ``overrides`` go to the config (e.g. another ``text_config``)."""
    if version not in MSCLAP_VERSIONS:
        raise ConversionError(f"unknown msclap version {version!r}: one of {', '.join(MSCLAP_VERSIONS)}")
    sd = load_release_state_dict(checkpoint)
    _check_version(version, sd)
    config = msclap_config(version, sd, **overrides)
    tokenizer = load_tokenizer(tokenizer_dir, HUB_TOKENIZERS[version])
    if version == "2022":
        check_tokenizer("BERT", tokenizer, config.text_config.vocab_size)
    else:
        check_tokenizer("GPT-2", tokenizer, (config.lm_config if version == "clapcap" else config.text_config)
                        .vocab_size, eos=GPT2_EOS)
    if version == "clapcap":
        from pengi.models.pengi.modeling_pengi import Pengi
        from pengi.models.pengi.processing_pengi import PengiProcessor

        model, report = build_converted(Pengi, config, msclap_mapper(version, sd, config), tied=LM_TIED)
        model.processor = PengiProcessor(config, tokenizer)
    else:
        from pengi.models.clap.modeling_clap import CLAP
        from pengi.models.clap.processing_clap import CLAPProcessor

        if version == "2023":
            tokenizer.pad_token = "!"  # msclap pads GPT-2 texts with "!" (id 0) and pools by counting non-zero ids
        model, report = build_converted(CLAP, config, msclap_mapper(version, sd, config))
        model.processor = CLAPProcessor(config, tokenizer)
    del sd
    model.save_pretrained(out_dir)
    return report


def _check_version(version: str, sd: Mapping[str, torch.Tensor]) -> None:
    """A clear message when the file is another release than the one named (the key lists would say less)."""
    kinds = {"clapcap": "clap_project.prefix_const", "2022": "audio_encoder.base.conv_block1.conv1.weight",
             "2023": "audio_encoder.base.htsat.patch_embed.proj.weight"}
    if kinds[version] not in sd:
        found = [v for v, k in kinds.items() if k in sd]
        hint = f"; it looks like msclap {found[0]}" if found else ""
        raise ConversionError(f"this is not an msclap {version} checkpoint: it has no {kinds[version]}{hint}")
