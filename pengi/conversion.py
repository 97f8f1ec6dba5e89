"""Machinery shared by the checkpoint converters (`pengi.convert_pengi`, `pengi.convert_clap`).

A converter reads a foreign state dict with ``torch.load(weights_only=True)`` only, then a `KeyMapper` decides
every key: mapped onto a key of our model, or dropped by an explicit rule with a reason. `KeyMapper.finish`
then stops the conversion with a `ConversionError` naming every key that was not decided, every key of our
model left unfilled, and every shape mismatch. Buffers that our model computes itself (STFT kernels, Swin
masks and position indices) are checked against what it computes before they are dropped.

The HTSAT of the Pengi and msclap releases (``htsat.*``, the code of the HTS-AT paper) maps onto transformers'
``ClapAudioModel`` by `HTSATKeys`; their torchlibrosa front end (``spectrogram_extractor``,
``logmel_extractor``) onto our `LogMelSpectrogram` by `KeyMapper.torchlibrosa_frontend`.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedConfig

log = logging.getLogger("pengi")

WINDOW_KEY = "audio_encoder.frontend.window"
MEL_FILTERS_KEY = "audio_encoder.frontend.mel_filters"

DropRule = tuple[re.Pattern[str], str]


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


def names(keys: Sequence[str], limit: int = 30) -> str:
    """Keys for an error message: the first ``limit``, then how many more."""
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "")


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
        raise ConversionError(f"{path}: entries that are not tensors: {names(bad)}")
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


# ---------------------------------------------------------------------------------------------- rules
# Buffers that transformers 4.x wrote into state dicts and newer versions compute instead.
OBSOLETE_BUFFER_RULES: tuple[DropRule, ...] = (
    (re.compile(r".*\.embeddings\.position_ids"), "obsolete position-id buffer (written by transformers 4.x)"),
    (re.compile(r".*\.h\.\d+\.attn\.(bias|masked_bias)"), "obsolete GPT-2 causal-mask buffer (transformers 4.x)"),
)

# Inside a Swin block: release name -> ClapAudioLayer name.
SWIN_BLOCK_RENAMES = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}


class HTSATKeys:
    """Keys of the releases' HTSAT (``SRC`` = e.g. ``audio_encoder.base.htsat.``) -> ``ClapAudioModel``'s.

    ``bn0`` -> ``batch_norm``; in each Swin block ``norm1``/``norm2`` -> ``layernorm_before``/``layernorm_after``,
    the fused ``attn.qkv`` -> ``attention.self.{query,key,value}``, ``attn.proj`` -> ``attention.output.dense``,
    ``mlp.fc1``/``mlp.fc2`` -> ``intermediate.dense``/``output.dense``; ``patch_embed``, ``downsample`` and
    ``norm`` keep their names. The stored ``attn_mask`` buffers are checked and dropped, the relative position
    indices checked and kept, the TSCAM classification head (``tscam_conv``, ``head``) dropped.
    """

    def __init__(self, src: str, dst: str, audio_config: PreTrainedConfig):
        self.src, self.dst = src, dst
        s = re.escape(src)
        self.block_re = re.compile(s + r"layers\.(\d+)\.blocks\.(\d+)\.(.+)")
        self.buffer_re = re.compile(s + r"layers\.(\d+)\.blocks\.(\d+)\.(attn_mask|attn\.relative_position_index)")
        self.downsample_re = re.compile(s + r"layers\.(\d+)\.downsample\.((?:reduction|norm)\.(?:weight|bias))")
        self.head_re = re.compile(s + r"(tscam_conv|head)\.(weight|bias)")
        self.renames = ((src + "bn0.", dst + "batch_norm."), (src + "patch_embed.", dst + "patch_embed."),
                        (src + "norm.", dst + "norm."))
        self.window = audio_config.window_size
        stride = audio_config.patch_stride
        grid = audio_config.spec_size // (stride[0] if isinstance(stride, (list, tuple)) else stride)
        self.resolutions = [grid // 2 ** i for i in range(len(audio_config.depths))]

    def map(self, m: KeyMapper, key: str, value: torch.Tensor) -> bool:
        """Map or drop ``key`` if it belongs to the HTSAT; False if it does not."""
        if not key.startswith(self.src):
            return False
        if self.head_re.fullmatch(key):
            m.drop(key, "TSCAM classification head, unused for the embedding")
            return True
        if match := self.buffer_re.fullmatch(key):
            self._buffer(m, key, value, int(match.group(1)), int(match.group(2)), match.group(3))
            return True
        if match := self.block_re.fullmatch(key):
            stage, block, name = match.groups()
            dst = f"{self.dst}layers.{stage}.blocks.{block}."
            if name in ("attn.qkv.weight", "attn.qkv.bias"):
                if value.shape[0] % 3:
                    m.problems.append(f"{key}: shape {list(value.shape)} does not split into query/key/value")
                    return True
                kind = name.rsplit(".", 1)[1]
                for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                    m.put(f"{dst}attention.self.{part}.{kind}", chunk.clone(), key)
                return True
            module, _, leaf = name.rpartition(".")
            if module in SWIN_BLOCK_RENAMES and leaf in ("weight", "bias"):
                m.put(f"{dst}{SWIN_BLOCK_RENAMES[module]}.{leaf}", value, key)
                return True
            if name == "attn.relative_position_bias_table":
                m.put(f"{dst}attention.self.relative_position_bias_table", value, key)
                return True
        if match := self.downsample_re.fullmatch(key):
            m.put(f"{self.dst}layers.{match.group(1)}.downsample.{match.group(2)}", value, key)
            return True
        return m.rename(key, value, self.renames)

    def _buffer(self, m: KeyMapper, key: str, value: torch.Tensor, stage: int, block: int, name: str) -> None:
        if name == "attn.relative_position_index":
            expected = swin_relative_position_index(self.window)
            if value.shape != expected.shape or not torch.equal(value.long(), expected):
                m.problems.append(f"{key} is not the Swin relative position index of a {self.window}x"
                                  f"{self.window} window")
                return
            m.put(f"{self.dst}layers.{stage}.blocks.{block}.attention.self.relative_position_index", value, key)
            m.checked.add("stored relative position indices = our model's")
            return
        # attn_mask: our model builds the same mask at run time, so the stored one is checked and dropped.
        if stage >= len(self.resolutions):
            m.unknown.append(key)
            return
        size = self.resolutions[stage]
        shift = self.window // 2 if block % 2 else 0
        if size <= self.window or shift == 0:
            m.problems.append(f"{key}: no shifted-window mask is expected in stage {stage} block {block}")
            return
        expected = swin_shift_mask(size, size, self.window, shift)
        if value.shape != expected.shape or not torch.equal(value.float(), expected):
            m.problems.append(f"{key} differs from the shifted-window mask our model computes")
            return
        m.drop(key, "shifted-window attention mask, equal to the one our model computes at run time")
        m.checked.add("stored shifted-window attention masks = our model's")


class KeyMapper:
    """Decides every key of a foreign state dict: ``put`` onto one of ours, ``drop`` with a reason, or unknown.

    ``renames`` are plain prefix renames (the first match wins); ``drops`` are regular expressions with the
    reason shown in the report; ``htsat`` maps a release HTSAT; ``frontend`` is the prefix of a torchlibrosa
    front end (``spectrogram_extractor``, ``logmel_extractor``) whose STFT is checked and whose mel filterbank
    is kept. Call `run`, then `finish`.
    """

    def __init__(self, source: Mapping[str, torch.Tensor], renames: Sequence[tuple[str, str]] = (),
                 drops: Sequence[DropRule] = (), htsat: HTSATKeys | None = None, frontend: str | None = None,
                 n_fft: int | None = None, win_length: int | None = None):
        self.source = source
        self.renames, self.drops, self.htsat = tuple(renames), tuple(drops), htsat
        self.out: dict[str, torch.Tensor] = {}
        self.origin: dict[str, str] = {}
        self.unknown: list[str] = []
        self.problems: list[str] = []
        self.checked: set[str] = set()
        self.report = ConversionReport()
        self.stft_keys: tuple[str, ...] = ()
        self.mel_key: str | None = None
        self.n_fft, self.win_length = n_fft, win_length if win_length is not None else n_fft
        if frontend is not None:
            self.stft_keys = (frontend + "spectrogram_extractor.stft.conv_real.weight",
                              frontend + "spectrogram_extractor.stft.conv_imag.weight")
            self.mel_key = frontend + "logmel_extractor.melW"

    def put(self, target: str, value: torch.Tensor, source_key: str) -> None:
        if target in self.out:
            self.problems.append(f"{target} is filled by both {self.origin[target]} and {source_key}")
        self.out[target], self.origin[target] = value, source_key
        self.report.mapped += 1

    def drop(self, key: str, reason: str) -> None:
        self.report.dropped.setdefault(reason, []).append(key)

    def rename(self, key: str, value: torch.Tensor, renames: Sequence[tuple[str, str]]) -> bool:
        for src, dst in renames:
            if key.startswith(src):
                self.put(dst + key[len(src):], value, key)
                return True
        return False

    def run(self) -> KeyMapper:
        for key, value in self.source.items():
            if key in self.stft_keys:
                continue  # checked together below
            if key == self.mel_key:
                self.put(MEL_FILTERS_KEY, value, key)  # the stored filterbank is kept, [n_freqs, n_mels] as ours
                continue
            rule = next((reason for pattern, reason in self.drops if pattern.fullmatch(key)), None)
            if rule is not None:
                self.drop(key, rule)
            elif not ((self.htsat is not None and self.htsat.map(self, key, value))
                      or self.rename(key, value, self.renames)):
                self.unknown.append(key)
        if self.stft_keys:
            self.torchlibrosa_stft()
        return self

    def torchlibrosa_stft(self) -> None:
        """Check the stored STFT conv kernels are a periodic-Hann DFT of our ``n_fft``; our front end then
        computes the same STFT with a Hann ``window`` buffer, which is filled here."""
        present = [k for k in self.stft_keys if k in self.source]
        if not present:
            self.problems.append(f"the STFT kernels are missing ({', '.join(self.stft_keys)}); they define the "
                                 "front end")
            return
        if len(present) != 2:
            self.problems.append(f"only one of the STFT kernels is present: {present[0]}")
            return
        real, imag = (self.source[k] for k in self.stft_keys)
        n_fft = real.shape[-1]
        want_real, want_imag = hann_dft_kernels(n_fft)
        if real.shape != want_real.shape or imag.shape != want_imag.shape:
            self.problems.append(f"STFT kernels of shape {list(real.shape)} are not n_fft//2+1 x 1 x n_fft")
            return
        ok_imag = (torch.allclose(imag.double(), want_imag, atol=1e-5)
                   or torch.allclose(imag.double(), -want_imag, atol=1e-5))  # the sign does not change the power
        if not (torch.allclose(real.double(), want_real, atol=1e-5) and ok_imag):
            self.problems.append(f"{self.stft_keys[0]} / conv_imag are not a periodic-Hann-windowed DFT; "
                                 "our front end cannot reproduce them")
            return
        if n_fft != self.n_fft or n_fft != self.win_length:
            self.problems.append(f"STFT kernels have n_fft {n_fft}, the config {self.n_fft} (window "
                                 f"{self.win_length})")
            return
        self.out[WINDOW_KEY] = torch.hann_window(n_fft, periodic=True, dtype=torch.float32)
        self.origin[WINDOW_KEY] = "STFT kernels"
        for key in self.stft_keys:
            self.drop(key, "STFT conv kernels, checked to be a periodic-Hann DFT (our front end computes the STFT)")
        self.report.checked.append(f"STFT kernels = periodic Hann DFT, n_fft {n_fft}")

    def finish(self, target: Mapping[str, torch.Tensor],
               tied: Sequence[tuple[str, str]] = ()) -> tuple[dict[str, torch.Tensor], ConversionReport]:
        """Check the mapping against ``target`` (our model's state dict: names, shapes, dtypes) and return the
        converted tensors (in our dtypes) and the report; raise `ConversionError` naming every problem.
        ``tied`` pairs of our keys must hold equal tensors (an output layer tied to its input embedding)."""
        out, problems = self.out, list(self.problems)
        if self.unknown:
            problems.append(f"{len(self.unknown)} release key(s) with no mapping and no drop rule: "
                            f"{names(self.unknown)}")
        extra = [f"{k} (from {self.origin[k]})" for k in out if k not in target]
        if extra:
            problems.append(f"{len(extra)} key(s) mapped onto names our model does not have: {names(extra)}")
        missing = [k for k in target if k not in out]
        if missing:
            problems.append(f"{len(missing)} key(s) of our model not filled by the checkpoint: {names(missing)}")
        shapes = [f"{k} (from {self.origin[k]}): {list(v.shape)} vs ours {list(target[k].shape)}"
                  for k, v in out.items() if k in target and v.shape != target[k].shape]
        if shapes:
            problems.append(f"{len(shapes)} shape mismatch(es): {names(shapes)}")
        for a, b in tied:
            if a in out and b in out and out[a].shape == out[b].shape and not torch.equal(out[a], out[b]):
                problems.append(f"{self.origin[a]} differs from {self.origin[b]}; the output layer must be tied "
                                "to the token embedding")
        if problems:
            raise ConversionError("the checkpoint does not convert cleanly:\n- " + "\n- ".join(problems))
        for key, value in out.items():
            if value.dtype != target[key].dtype:
                out[key] = value.to(target[key].dtype)
        self.report.checked += sorted(self.checked)
        return out, self.report


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


def run_conversion(convert: Callable[[], ConversionReport], source: str, out_dir: str, loads_with: str,
                   exists: Callable[[str], bool] = os.path.isfile) -> int:
    """Run a converter for the command line: exit status 0 (done), 1 (does not convert), 2 (not found, I/O)."""
    if not exists(source):
        log.error("%s: not found", source)
        return 2
    try:
        report = convert()
    except ConversionError as err:
        log.error("%s", err)
        return 1
    except OSError as err:  # tokenizers not found (offline, wrong folder), disk full, ...
        log.error("%s", err)
        return 2
    log.info("%s", report.summary())
    log.info("wrote %s; load it with %s.from_pretrained(%r)", out_dir, loads_with, out_dir)
    return 0
