"""Convert the published CLAP checkpoints into pengi model folders.

    pengi convert msclap {2022,2023,clapcap} FILE OUT_DIR [--tokenizer-dir DIR]
    pengi convert laion-clap HF_FOLDER OUT_DIR

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

**LAION-CLAP** from a transformers ``ClapModel`` folder (``save_pretrained`` output, e.g. a download of
``laion/clap-htsat-unfused``): ``audio_model`` -> ``audio_encoder.base`` (the same ``ClapAudioModel``),
``text_model`` (RoBERTa) -> ``text_encoder.base`` (a ``RobertaModel``, pooled by its pooler as ClapModel does),
``audio_projection``/``text_projection`` -> the ``"mlp"`` projections. ClapModel has two temperatures:
``logit_scale_a`` scales ``logits_per_audio`` (audio against texts: zero-shot classification) and
``logit_scale_t`` ``logits_per_text``. pengi's CLAP has one, so it takes ``logit_scale_a`` (zero-shot
classification then matches ``ClapModel``) and ``logit_scale_t`` is dropped with that reason. The front end
(48 kHz, 10 s, window 1024, hop 480, 64 mel bins, 50-14000 Hz) and the filterbank come from the folder's
``preprocessor_config.json`` (``ClapFeatureExtractor``). Only unfused models convert: the fused ones take a
four-channel input (a global view and three crops) that pengi's front end does not make.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import BertConfig, ClapAudioConfig, GPT2Config, PreTrainedConfig, RobertaConfig

from .cnn14 import Cnn14Config
from .configuration_clap import CLAPConfig
from .contrastive import MAX_LOGIT_SCALE
from .conversion import (
    MEL_FILTERS_KEY,
    OBSOLETE_BUFFER_RULES,
    WINDOW_KEY,
    ConversionError,
    ConversionReport,
    HTSATKeys,
    KeyMapper,
    check_tokenizer,
    load_release_state_dict,
    load_tokenizer,
    run_conversion,
)
from .convert_pengi import LM_TIED, mapper_shape
from .presets import clap_htsat_gpt2, clap_paper, pengi_base_no_text_enc

log = logging.getLogger("pengi")

MSCLAP_VERSIONS = ("2022", "2023", "clapcap")
HUB_TOKENIZERS = {"2022": "bert-base-uncased", "2023": "gpt2", "clapcap": "gpt2"}
GPT2_EOS = 50256
CLAPCAP_STOP = (220, GPT2_EOS)  # msclap's stop token (the " " of " <|endoftext|>") and end-of-text
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
                      f_max=14000.0, num_beams=5, max_new_tokens=67, stop_token_ids=list(CLAPCAP_STOP),
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
def _build(model_class: type, config: PreTrainedConfig, mapper: KeyMapper,
           tied: Sequence[tuple[str, str]] = ()) -> tuple[torch.nn.Module, ConversionReport]:
    """Our model on the meta device, filled with the mapped tensors (every key checked by `KeyMapper.finish`)."""
    with torch.device("meta"):
        model = model_class(config)  # names, shapes and dtypes only; the checkpoint fills every tensor
    state_dict, report = mapper.run().finish(model.state_dict(), tied=tied)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.tie_weights()
    return model, report


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
        from .modeling_pengi import Pengi
        from .processing_pengi import PengiProcessor

        model, report = _build(Pengi, config, msclap_mapper(version, sd, config), tied=LM_TIED)
        model.processor = PengiProcessor(config, tokenizer)
    else:
        from .modeling_clap import CLAP
        from .processing_clap import CLAPProcessor

        if version == "2023":
            tokenizer.pad_token = "!"  # msclap pads GPT-2 texts with "!" (id 0) and pools by counting non-zero ids
        model, report = _build(CLAP, config, msclap_mapper(version, sd, config))
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


# ---------------------------------------------------------------------------------------------- LAION-CLAP
LAION_RENAMES = (
    ("audio_model.", "audio_encoder.base."),
    ("audio_projection.", "audio_encoder.projection."),
    ("text_model.", "text_encoder.base."),
    ("text_projection.", "text_encoder.projection."),
    ("logit_scale_a", "logit_scale"),
)
LAION_DROPS = (
    (re.compile(r"logit_scale_t"), "ClapModel's text-to-audio temperature; pengi's CLAP has one temperature and "
                                   "takes logit_scale_a (audio-to-text: zero-shot classification)"),
    (re.compile(r"text_model\.embeddings\.(position_ids|token_type_ids)"),
     "index buffer that the text model computes itself"),
)


def load_hf_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights of a ``save_pretrained`` folder: safetensors (one file or shards), else ``pytorch_model.bin``
    read with ``torch.load(weights_only=True)``."""
    from safetensors.torch import load_file

    folder = os.fspath(folder)
    single, index = os.path.join(folder, "model.safetensors"), os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(single):
        return load_file(single)
    if os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        out: dict[str, torch.Tensor] = {}
        for shard in shards:
            out.update(load_file(os.path.join(folder, shard)))
        return out
    if os.path.isfile(os.path.join(folder, "pytorch_model.bin")):
        return load_release_state_dict(os.path.join(folder, "pytorch_model.bin"))
    raise ConversionError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def laion_config(folder: str | os.PathLike, **overrides: Any) -> tuple[CLAPConfig, torch.Tensor]:
    """Our `CLAPConfig` of a transformers ``ClapModel`` folder, and the mel filterbank its feature extractor uses."""
    from transformers import ClapConfig, ClapFeatureExtractor

    hf = ClapConfig.from_pretrained(folder)
    audio, text = hf.audio_config, hf.text_config
    if audio.enable_fusion:
        raise ConversionError(f"{folder} is a fused LAION-CLAP (enable_fusion=True): its four-channel input (a "
                              "global view and three crops) is not supported; convert an unfused model")
    for name, cfg in (("audio", audio), ("text", text)):
        if cfg.projection_hidden_act != "relu":
            raise ConversionError(f"{name} projection activation {cfg.projection_hidden_act!r}: only relu is "
                                  "supported (LAION-CLAP's)")
    if not os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        raise ConversionError(f"{folder}: no preprocessor_config.json; the audio front end (sample rate, hop, "
                              "mel filterbank) is defined there")
    fe = ClapFeatureExtractor.from_pretrained(folder)
    if fe.top_db is not None:
        raise ConversionError(f"{folder}: the feature extractor clips log-mels at top_db={fe.top_db}, which pengi's "
                              "front end does not do")
    filters = fe.mel_filters if fe.truncation == "fusion" else fe.mel_filters_slaney  # as fe picks them, unfused
    text_fields = {k: v for k, v in text.to_dict().items() if k in RobertaConfig().to_dict()
                   and k not in ("model_type", "architectures", "transformers_version")}
    audio_fields = {k: v for k, v in audio.to_dict().items() if k not in ("transformers_version", "model_type")}
    values: dict[str, Any] = dict(
        audio_config=ClapAudioConfig(**audio_fields), text_config=RobertaConfig(**text_fields),
        sample_rate=fe.sampling_rate, clip_seconds=float(fe.nb_max_samples) / fe.sampling_rate,
        n_fft=fe.fft_window_size, hop_length=fe.hop_length, win_length=fe.fft_window_size,
        n_mels=fe.feature_size, f_min=float(fe.frequency_min), f_max=float(fe.frequency_max),
        short_audio="repeatpad" if fe.padding == "repeatpad" else ("repeat" if fe.padding == "repeat" else "zeros"),
        text_pooling="pooler", text_max_length=77, projection="mlp", d_proj=hf.projection_dim,
        projection_dropout=0.0)
    values.update(overrides)
    return CLAPConfig(**values), torch.tensor(filters, dtype=torch.float32)


def convert_laion(folder: str | os.PathLike, out_dir: str | os.PathLike, **overrides: Any) -> ConversionReport:
    """Convert a transformers ``ClapModel`` folder (LAION-CLAP, unfused) into a folder `CLAP.from_pretrained` loads;
    the tokenizer is the folder's own."""
    from transformers import AutoTokenizer

    from .modeling_clap import CLAP
    from .processing_clap import CLAPProcessor

    if not os.path.isdir(folder):
        raise ConversionError(f"{folder}: not a folder (give a ClapModel save_pretrained folder)")
    config, filters = laion_config(folder, **overrides)
    sd = load_hf_state_dict(folder)
    mapper = KeyMapper(sd, LAION_RENAMES, LAION_DROPS)
    mapper.out[MEL_FILTERS_KEY], mapper.origin[MEL_FILTERS_KEY] = filters, "preprocessor_config.json"
    mapper.out[WINDOW_KEY] = torch.hann_window(config.win_length, periodic=True)
    mapper.origin[WINDOW_KEY] = "preprocessor_config.json (periodic Hann, as ClapFeatureExtractor)"
    mapper.report.checked.append("mel filterbank and window from the folder's ClapFeatureExtractor")
    model, report = _build(CLAP, config, mapper)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    check_tokenizer("RoBERTa", tokenizer, config.text_config.vocab_size)
    model.processor = CLAPProcessor(config, tokenizer)
    model.save_pretrained(out_dir)
    return report


# ---------------------------------------------------------------------------------------------- command line
def add_convert_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``msclap`` and ``laion-clap`` to the subparsers of ``pengi convert``."""
    p = subparsers.add_parser("msclap", help="convert an msclap checkpoint (CLAP 2022, 2023, clapcap)",
                              description="Convert CLAP_weights_2022.pth / CLAP_weights_2023.pth (-> a CLAP folder) "
                                          "or clapcap_weights_2023.pth (-> a Pengi folder).")
    p.add_argument("version", choices=MSCLAP_VERSIONS)
    p.add_argument("checkpoint", help="the release's .pth file")
    p.add_argument("out_dir", help="folder to write (config.json, model.safetensors, tokenizer/)")
    p.add_argument("--tokenizer-dir", default=None, metavar="DIR",
                   help="a tokenizer folder loadable by AutoTokenizer (BERT for 2022, GPT-2 otherwise); "
                        "default: the hub names 'bert-base-uncased' / 'gpt2' from the local cache")
    p.set_defaults(func=lambda a: run_conversion(
        lambda: convert_msclap(a.version, a.checkpoint, a.out_dir, a.tokenizer_dir), a.checkpoint, a.out_dir,
        "Pengi" if a.version == "clapcap" else "CLAP"))
    p = subparsers.add_parser("laion-clap", help="convert a LAION-CLAP transformers ClapModel folder (unfused)",
                              description="Convert a transformers ClapModel folder (save_pretrained output).")
    p.add_argument("folder", help="the ClapModel folder (config.json, weights, preprocessor and tokenizer files)")
    p.add_argument("out_dir", help="folder to write")
    p.set_defaults(func=lambda a: run_conversion(lambda: convert_laion(a.folder, a.out_dir), a.folder, a.out_dir,
                                                 "CLAP", os.path.isdir))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pengi.convert_clap {msclap,laion-clap} ...``."""
    parser = argparse.ArgumentParser(prog="python -m pengi.convert_clap", description=__doc__.split("\n\n")[0])
    add_convert_parsers(parser.add_subparsers(dest="source", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
