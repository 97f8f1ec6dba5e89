"""Convert a LAION-CLAP model in transformers' layout into a pengi CLAP folder.

    pengi convert laion-clap HF_FOLDER OUT_DIR

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

import json
import os
import re
from typing import Any

import torch
from transformers import ClapAudioConfig, RobertaConfig

from pengi.conversion import (
    MEL_FILTERS_KEY,
    WINDOW_KEY,
    ConversionError,
    ConversionReport,
    KeyMapper,
    build_converted,
    check_tokenizer,
    load_release_state_dict,
)
from pengi.models.clap.configuration_clap import CLAPConfig

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

    from pengi.models.clap.modeling_clap import CLAP
    from pengi.models.clap.processing_clap import CLAPProcessor

    if not os.path.isdir(folder):
        raise ConversionError(f"{folder}: not a folder (give a ClapModel save_pretrained folder)")
    config, filters = laion_config(folder, **overrides)
    sd = load_hf_state_dict(folder)
    mapper = KeyMapper(sd, LAION_RENAMES, LAION_DROPS)
    mapper.out[MEL_FILTERS_KEY], mapper.origin[MEL_FILTERS_KEY] = filters, "preprocessor_config.json"
    mapper.out[WINDOW_KEY] = torch.hann_window(config.win_length, periodic=True)
    mapper.origin[WINDOW_KEY] = "preprocessor_config.json (periodic Hann, as ClapFeatureExtractor)"
    mapper.report.checked.append("mel filterbank and window from the folder's ClapFeatureExtractor")
    model, report = build_converted(CLAP, config, mapper)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    check_tokenizer("RoBERTa", tokenizer, config.text_config.vocab_size)
    model.processor = CLAPProcessor(config, tokenizer)
    model.save_pretrained(out_dir)
    return report
