"""The base of every family's collator (`PengiCollator`, `CLAPCollator`, `SLAPCollator`, beside their processors)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pengi.audio import ClipLoader


class Collator:
    """Batch decoded examples with a model's processor, dropping the rows whose audio could not be read.

    ``processor.batch`` stacks the waveforms (for a variable-length tower: right-padded, with
    ``waveform_lengths``); each family's collator adds its text tensors in `texts`.
    """

    def __init__(self, processor: ClipLoader):
        self.processor = processor

    def texts(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {}

    def __call__(self, items: Sequence[dict[str, Any] | None]) -> dict[str, torch.Tensor]:
        items = [x for x in items if x is not None]
        if not items:
            return {}
        return {**self.processor.batch([x["waveform"] for x in items]), **self.texts(items)}
