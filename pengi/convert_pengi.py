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
import math
import os
import pickle
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .configuration_pengi import PengiConfig
from .presets import pengi_base, pengi_base_no_text_enc

log = logging.getLogger("pengi")

HUB_GPT2_TOKENIZER = "gpt2"
HUB_CLIP_TOKENIZER = "openai/clip-vit-base-patch16"

SRC_HTSAT = "audio_encoder.base.htsat."
DST_HTSAT = "audio_encoder.base.audio_encoder."
STFT_KEYS = (SRC_HTSAT + "spectrogram_extractor.stft.conv_real.weight",
             SRC_HTSAT + "spectrogram_extractor.stft.conv_imag.weight")
MEL_KEY = SRC_HTSAT + "logmel_extractor.melW"
WINDOW_KEY = "audio_encoder.frontend.window"

# Plain renames by prefix (checked in order; the first match wins).
PREFIX_RENAMES: tuple[tuple[str, str], ...] = (
    (SRC_HTSAT + "bn0.", DST_HTSAT + "batch_norm."),
    (SRC_HTSAT + "patch_embed.", DST_HTSAT + "patch_embed."),
    (SRC_HTSAT + "norm.", DST_HTSAT + "norm."),
    ("audio_encoder.projection.", "audio_encoder.projection."),
    ("caption_encoder.base.", "prompt_encoder.base."),
    ("caption_encoder.clip_text_projection.", "prompt_encoder.clip_text_projection."),
    ("caption_encoder.projection.", "prompt_encoder.projection."),
    ("caption_decoder.gpt.", "lm."),
    ("caption_decoder.audio_project.", "audio_mapper."),
    ("caption_decoder.text_project.", "text_mapper."),
)

# Inside a Swin block: release name -> ClapAudioLayer name.
BLOCK_RENAMES = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}

# Keys dropped without use, with the reason shown in the report.
DROP_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"caption_encoder\.base\.embeddings\.position_ids"), "obsolete buffer (transformers 4.28)"),
    (re.compile(r"caption_decoder\.gpt\.transformer\.h\.\d+\.attn\.(bias|masked_bias)"),
     "obsolete GPT-2 causal-mask buffer (transformers 4.28)"),
    (re.compile(re.escape(SRC_HTSAT) + r"(tscam_conv|head)\.(weight|bias)"),
     "TSCAM classification head, unused for the embedding"),
)

BLOCK_RE = re.compile(re.escape(SRC_HTSAT) + r"layers\.(\d+)\.blocks\.(\d+)\.(.+)")
BLOCK_BUFFER_RE = re.compile(re.escape(SRC_HTSAT)
                             + r"layers\.(\d+)\.blocks\.(\d+)\.(attn_mask|attn\.relative_position_index)")
DOWNSAMPLE_RE = re.compile(re.escape(SRC_HTSAT) + r"layers\.(\d+)\.downsample\.((?:reduction|norm)\.(?:weight|bias))")


class ConversionError(ValueError):
    """The checkpoint does not convert cleanly; the message names every offending key."""


@dataclass
class ConversionReport:
    mapped: int = 0
    dropped: dict[str, list[str]] = field(default_factory=dict)
    checked: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"filled {self.mapped} model tensors from the checkpoint"]
        for reason, keys in self.dropped.items():
            lines.append(f"dropped {len(keys)}: {reason}")
        lines += [f"checked: {c}" for c in self.checked]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- reading
def load_release_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The release's state dict (from ``{"model": state_dict, ...}`` or a bare state dict), ``module.`` stripped."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise ConversionError(f"{path}: cannot be read as a torch checkpoint with weights_only=True: "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        raise ConversionError(f"{path}: neither a state dict nor a dict with a 'model' state dict")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"{path}: entries that are not tensors: {_names(bad)}")
    return strip_module_prefix(obj)


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` prefix that DataParallel puts on every key."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if name in out:
            raise ConversionError(f"key {name!r} occurs both with and without the 'module.' prefix")
        out[name] = value
    return out


# ---------------------------------------------------------------------------------------------- config
def release_config(state_dict: Mapping[str, torch.Tensor], **overrides: Any) -> PengiConfig:
    """`PengiConfig` of a release checkpoint: pengi-base (CLIP text encoder) or base_no_text_enc, compat mode."""
    has_text_encoder = any(k.startswith("caption_encoder.") for k in state_dict)
    values: dict[str, Any] = dict(compat="pengi-release")
    audio_const = state_dict.get("caption_decoder.audio_project.prefix_const")
    text_const = state_dict.get("caption_decoder.text_project.prefix_const")
    if audio_const is not None and audio_const.ndim == 2:
        values["audio_prefix_length"] = audio_const.shape[0]
        fc1 = state_dict.get("caption_decoder.audio_project.transformer.layers.0.mlp.fc1.weight")
        if fc1 is not None and fc1.ndim == 2:
            values["mapper_mlp_ratio"] = fc1.shape[0] / audio_const.shape[1]
    if text_const is not None and text_const.ndim == 2:
        values["text_prefix_length"] = text_const.shape[0]
    proj = state_dict.get("audio_encoder.projection.linear1.weight")
    if proj is not None and proj.ndim == 2:
        values["d_proj"] = proj.shape[0]
    layers = {int(m.group(1)) for k in state_dict
              if (m := re.match(r"caption_decoder\.audio_project\.transformer\.layers\.(\d+)\.", k))}
    if layers:
        values["mapper_layers"] = max(layers) + 1
    values.update(overrides)
    return (pengi_base if has_text_encoder else pengi_base_no_text_enc)(**values)


# ---------------------------------------------------------------------------------------------- derived buffers
def hann_dft_kernels(n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """STFT as conv kernels ``(n_fft // 2 + 1, 1, n_fft)``: ``w[n] cos(2 pi k n / N)`` and ``-w[n] sin(...)``."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    phase = 2 * math.pi * torch.remainder(k[:, None] * n[None, :], n_fft) / n_fft
    return (torch.cos(phase) * window)[:, None, :], (-torch.sin(phase) * window)[:, None, :]


def swin_relative_position_index(window: int) -> torch.Tensor:
    """Index into the ``(2w-1)^2`` relative-position bias table for each pair of positions in a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


def swin_shift_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Shifted-window attention mask ``(windows, window^2, window^2)``: 0 within a region, -100 across regions."""
    def regions(size: int) -> torch.Tensor:
        idx = torch.arange(size)
        return (idx >= size - window).long() + (idx >= size - shift).long()

    label = regions(height)[:, None] * 3 + regions(width)[None, :]
    label = label.view(height // window, window, width // window, window).permute(0, 2, 1, 3).reshape(-1, window ** 2)
    differ = label[:, None, :] != label[:, :, None]
    return torch.zeros(differ.shape).masked_fill(differ, -100.0)


# ---------------------------------------------------------------------------------------------- mapping
class _Mapper:
    def __init__(self, source: Mapping[str, torch.Tensor], config: PengiConfig):
        self.source, self.config = source, config
        self.out: dict[str, torch.Tensor] = {}
        self.origin: dict[str, str] = {}
        self.unknown: list[str] = []
        self.problems: list[str] = []
        self.report = ConversionReport()
        audio = config.audio_config
        self.window = audio.window_size
        grid = audio.spec_size // audio.patch_stride[0]
        self.resolutions = [grid // 2 ** i for i in range(len(audio.depths))]

    def put(self, target: str, value: torch.Tensor, source_key: str) -> None:
        if target in self.out:
            self.problems.append(f"{target} is filled by both {self.origin[target]} and {source_key}")
        self.out[target], self.origin[target] = value, source_key
        self.report.mapped += 1

    def drop(self, key: str, reason: str) -> None:
        self.report.dropped.setdefault(reason, []).append(key)

    def run(self) -> None:
        for key, value in self.source.items():
            if key in STFT_KEYS:
                continue  # checked together below
            for pattern, reason in DROP_RULES:
                if pattern.fullmatch(key):
                    self.drop(key, reason)
                    break
            else:
                self.map_key(key, value)
        self.stft()

    def map_key(self, key: str, value: torch.Tensor) -> None:
        if key == MEL_KEY:
            self.put("audio_encoder.frontend.mel_filters", value, key)
            return
        if m := BLOCK_BUFFER_RE.fullmatch(key):
            self.block_buffer(key, value, int(m.group(1)), int(m.group(2)), m.group(3))
            return
        if m := BLOCK_RE.fullmatch(key):
            stage, block, name = m.groups()
            dst = f"{DST_HTSAT}layers.{stage}.blocks.{block}."
            if name in ("attn.qkv.weight", "attn.qkv.bias"):
                if value.shape[0] % 3:
                    self.problems.append(f"{key}: shape {list(value.shape)} does not split into query/key/value")
                    return
                kind = name.rsplit(".", 1)[1]
                for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                    self.put(f"{dst}attention.self.{part}.{kind}", chunk.clone(), key)
                return
            module, _, leaf = name.rpartition(".")
            if module in BLOCK_RENAMES and leaf in ("weight", "bias"):
                self.put(f"{dst}{BLOCK_RENAMES[module]}.{leaf}", value, key)
                return
            if name == "attn.relative_position_bias_table":
                self.put(f"{dst}attention.self.relative_position_bias_table", value, key)
                return
        if m := DOWNSAMPLE_RE.fullmatch(key):
            self.put(f"{DST_HTSAT}layers.{m.group(1)}.downsample.{m.group(2)}", value, key)
            return
        for src, dst in PREFIX_RENAMES:
            if key.startswith(src):
                self.put(dst + key[len(src):], value, key)
                return
        self.unknown.append(key)

    def block_buffer(self, key: str, value: torch.Tensor, stage: int, block: int, name: str) -> None:
        if name == "attn.relative_position_index":
            expected = swin_relative_position_index(self.window)
            if value.shape != expected.shape or not torch.equal(value.long(), expected):
                self.problems.append(f"{key} is not the Swin relative position index of a {self.window}x"
                                     f"{self.window} window")
                return
            target = f"{DST_HTSAT}layers.{stage}.blocks.{block}.attention.self.relative_position_index"
            self.put(target, value, key)
            return
        # attn_mask: our model builds the same mask at run time, so the stored one is checked and dropped.
        if stage >= len(self.resolutions):
            self.unknown.append(key)
            return
        size = self.resolutions[stage]
        shift = self.window // 2 if block % 2 else 0
        if size <= self.window or shift == 0:
            self.problems.append(f"{key}: no shifted-window mask is expected in stage {stage} block {block}")
            return
        expected = swin_shift_mask(size, size, self.window, shift)
        if value.shape != expected.shape or not torch.equal(value.float(), expected):
            self.problems.append(f"{key} differs from the shifted-window mask our model computes")
            return
        self.drop(key, "shifted-window attention mask, equal to the one our model computes at run time")

    def stft(self) -> None:
        present = [k for k in STFT_KEYS if k in self.source]
        if not present:
            self.problems.append(f"the STFT kernels are missing ({', '.join(STFT_KEYS)}); they define the front end")
            return
        if len(present) != 2:
            self.problems.append(f"only one of the STFT kernels is present: {present[0]}")
            return
        real, imag = (self.source[k] for k in STFT_KEYS)
        n_fft = real.shape[-1]
        want_real, want_imag = hann_dft_kernels(n_fft)
        if real.shape != want_real.shape or imag.shape != want_imag.shape:
            self.problems.append(f"STFT kernels of shape {list(real.shape)} are not n_fft//2+1 x 1 x n_fft")
            return
        ok_imag = (torch.allclose(imag.double(), want_imag, atol=1e-5)
                   or torch.allclose(imag.double(), -want_imag, atol=1e-5))  # the sign does not change the power
        if not (torch.allclose(real.double(), want_real, atol=1e-5) and ok_imag):
            self.problems.append(f"{STFT_KEYS[0]} / conv_imag are not a periodic-Hann-windowed DFT; "
                                 "our front end cannot reproduce them")
            return
        if n_fft != self.config.n_fft or n_fft != self.config.win_length:
            self.problems.append(f"STFT kernels have n_fft {n_fft}, the config {self.config.n_fft}")
            return
        self.out[WINDOW_KEY] = torch.hann_window(n_fft, periodic=True, dtype=torch.float32)
        self.origin[WINDOW_KEY] = "STFT kernels"
        for key in STFT_KEYS:
            self.drop(key, "STFT conv kernels, checked to be a periodic-Hann DFT (our front end computes the STFT)")
        self.report.checked.append(f"STFT kernels = periodic Hann DFT, n_fft {n_fft}")


def convert_state_dict(source: Mapping[str, torch.Tensor], config: PengiConfig,
                       target: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map a release state dict (``module.`` already stripped) onto ``target`` (our model's state dict: names,
    shapes and dtypes). Raises `ConversionError` naming every unknown, unfilled or mismatched key."""
    mapper = _Mapper(source, config)
    mapper.run()
    out, problems = mapper.out, list(mapper.problems)
    if mapper.unknown:
        problems.append(f"{len(mapper.unknown)} release key(s) with no mapping and no drop rule: "
                        f"{_names(mapper.unknown)}")
    extra = [f"{k} (from {mapper.origin[k]})" for k in out if k not in target]
    if extra:
        problems.append(f"{len(extra)} key(s) mapped onto names our model does not have: {_names(extra)}")
    missing = [k for k in target if k not in out]
    if missing:
        problems.append(f"{len(missing)} key(s) of our model not filled by the checkpoint: {_names(missing)}")
    shapes = [f"{k} (from {mapper.origin[k]}): {list(v.shape)} vs ours {list(target[k].shape)}"
              for k, v in out.items() if k in target and v.shape != target[k].shape]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {_names(shapes)}")
    tied = ("lm.lm_head.weight", "lm.transformer.wte.weight")
    if all(k in out for k in tied) and out[tied[0]].shape == out[tied[1]].shape:
        if not torch.equal(out[tied[0]], out[tied[1]]):
            problems.append("caption_decoder.gpt.lm_head.weight differs from transformer.wte.weight; "
                            "GPT-2's output layer must be tied to its token embedding")
    if problems:
        raise ConversionError("the checkpoint does not convert cleanly:\n- " + "\n- ".join(problems))
    for key, value in out.items():
        if value.dtype != target[key].dtype:
            out[key] = value.to(target[key].dtype)
    if any(k.endswith(("attn_mask", "relative_position_index")) for k in source):
        mapper.report.checked.append("stored attention masks and relative position indices = our model's")
    return out, mapper.report


def _names(keys: Sequence[str], limit: int = 30) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "")


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
    from transformers import AutoTokenizer

    def load(sub: str, hub_name: str):
        where = hub_name if tokenizers is None else os.path.join(os.fspath(tokenizers), sub)
        if tokenizers is not None and not os.path.isdir(where):
            raise ConversionError(f"--tokenizers: {where} is not a folder (it must hold a tokenizer loadable by "
                                  "AutoTokenizer.from_pretrained)")
        return AutoTokenizer.from_pretrained(where)

    gpt2 = load("gpt2", HUB_GPT2_TOKENIZER)
    _check_tokenizer("gpt2", gpt2, config.lm_config.vocab_size, eos=50256)
    clip = None
    if config.prompt_encoder_config is not None:
        clip = load("clip", HUB_CLIP_TOKENIZER)
        _check_tokenizer("clip", clip, config.prompt_encoder_config.vocab_size,
                         eos=config.prompt_encoder_config.eos_token_id)
    return gpt2, clip


def _check_tokenizer(name: str, tok, vocab_size: int, eos: int) -> None:
    # An empty or wrong tokenizer would convert "fine" and generate garbage, so check what it encodes.
    if len(tok) != vocab_size or tok.eos_token_id != eos:
        raise ConversionError(f"{name} tokenizer has {len(tok)} tokens and end-of-text id {tok.eos_token_id}; "
                              f"the checkpoint needs {vocab_size} tokens and id {eos}")
    if len(tok("a dog barks", add_special_tokens=False)["input_ids"]) < 2:
        raise ConversionError(f"{name} tokenizer does not split text into tokens (empty vocabulary?)")


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
    if not os.path.isfile(args.checkpoint):
        log.error("%s: file not found", args.checkpoint)
        return 2
    try:
        report = convert(args.checkpoint, args.out_dir, args.tokenizers)
    except ConversionError as err:
        log.error("%s", err)
        return 1
    except OSError as err:  # tokenizers not found (offline, wrong folder), disk full, ...
        log.error("%s", err)
        return 2
    log.info("%s", report.summary())
    log.info("wrote %s; load it with Pengi.from_pretrained(%r) or --model %s", args.out_dir, args.out_dir,
             args.out_dir)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pengi.convert_pengi CHECKPOINT OUT_DIR [--tokenizers DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m pengi.convert_pengi", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
