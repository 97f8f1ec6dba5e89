"""Where a batch job's model comes from, as a small value that can be sent to other processes: the local engine
opens it once in this process, each Ray model worker opens it in its own (on its GPU if it has one)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from pengi.errors import PengiInputError

log = logging.getLogger("pengi")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *sorted(DTYPES))  # auto: chosen for the device (`pick_dtype`)
FAMILIES = ("pengi", "contrastive")


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which containers and job schedulers set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pick_device(name: str) -> torch.device:
    """``name`` as a torch device, checked against this machine; ``auto``: CUDA, else MPS, else the CPU."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as err:
            raise PengiInputError("--device", f"{err}; use auto, cpu, cuda, cuda:N or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise PengiInputError("--device", "CUDA is not available on this machine; use --device cpu or auto")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise PengiInputError("--device", "MPS is not available on this machine; use --device cpu or auto")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """``--dtype``: a named dtype, or for ``auto`` bfloat16 on CUDA devices that support it natively and float32
    elsewhere (bfloat16 is no faster on most CPUs; the measurements behind the choice are in docs/perf.md)."""
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float32


def default_decode_workers(device: torch.device) -> int:
    """Decoding workers when ``--decode-workers`` is left out: 2 when the model runs on the CPU (it needs the
    cores), and with a GPU one per core less the one that drives it, at most 8."""
    if device.type == "cpu":
        return 2
    return max(2, min(8, available_cores() - 1))


@dataclass(frozen=True)
class ModelSource:
    """A model folder written by ``save_pretrained`` (an absolute path, so that other processes find it), or None
    for the model shipped with pengi; ``family`` is ``pengi`` (a `Pengi`) or ``contrastive`` (a `CLAP` or a
    `SLAP`, as the folder's config says). Opened on ``device`` (``auto``: the process's GPU if it has one) in
    ``dtype`` (``auto``: chosen for the device the process opens it on, `pick_dtype`)."""

    family: str
    folder: str | None
    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"dtype must be one of {list(DTYPE_CHOICES)}, got {self.dtype!r}")

    @property
    def name(self) -> str:
        """What embedding indexes record as the model: its folder, or ``default``."""
        return self.folder or "default"

    def check(self) -> None:
        """Fail with a clear message, before any work, if the folder is not a model folder."""
        if self.folder is None:
            return
        if not os.path.isdir(self.folder):
            raise PengiInputError(self.folder, "no such model folder" if not os.path.exists(self.folder) else
                                  "is a file; give the model folder (written by save_pretrained)")
        self.model_class()._check_model_type(self.folder)

    def model_class(self) -> Any:
        from pengi import CLAP, SLAP, Pengi

        if self.family == "pengi":
            return Pengi
        kind = None
        config_file = os.path.join(self.folder or "", "config.json")
        if os.path.isfile(config_file):
            with open(config_file, encoding="utf-8") as f:
                kind = json.load(f).get("model_type")
        return SLAP if kind == SLAP.config_class.model_type else CLAP

    def processor(self) -> Any:
        """The model's processor alone (its config and tokenizers, no weights): what decoding needs."""
        from pengi.models.pengi.modeling_pengi import DEFAULT_MODEL_DIR

        self.check()
        cls = self.model_class()
        path = self.folder or DEFAULT_MODEL_DIR
        return cls.processor_class.from_pretrained(path, cls.config_class.from_pretrained(path))

    def open(self) -> Any:
        """The model with its processor, on the device, in eval mode."""
        self.check()
        device = pick_device(self.device)
        dtype = pick_dtype(self.dtype, device)
        model = self.model_class().from_pretrained(self.folder)
        if self.dtype == "auto":
            log.info("dtype: %s (auto, on %s)", str(dtype).removeprefix("torch."), device.type)
        return model.to(device=device, dtype=dtype).eval()
