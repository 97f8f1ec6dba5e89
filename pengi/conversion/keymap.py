"""Machinery shared by the checkpoint converters (`pengi.models.pengi.convert_pengi`,
`pengi.models.clap.convert_msclap`, `pengi.models.clap.convert_laion`).

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
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedConfig

from pengi.conversion.buffers import hann_dft_kernels

if TYPE_CHECKING:
    from pengi.conversion.htsat import HTSATKeys

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


# Buffers that transformers 4.x wrote into state dicts and newer versions compute instead.
OBSOLETE_BUFFER_RULES: tuple[DropRule, ...] = (
    (re.compile(r".*\.embeddings\.position_ids"), "obsolete position-id buffer (written by transformers 4.x)"),
    (re.compile(r".*\.h\.\d+\.attn\.(bias|masked_bias)"), "obsolete GPT-2 causal-mask buffer (transformers 4.x)"),
)


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


def build_converted(model_class: type, config: PreTrainedConfig, mapper: KeyMapper,
                    tied: Sequence[tuple[str, str]] = ()) -> tuple[torch.nn.Module, ConversionReport]:
    """Our model built on the meta device (names, shapes and dtypes only) and filled with the mapped tensors,
    every key checked by `KeyMapper.finish`."""
    with torch.device("meta"):
        model = model_class(config)
    state_dict, report = mapper.run().finish(model.state_dict(), tied=tied)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.tie_weights()
    return model, report


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
