"""Reading a foreign checkpoint safely: ``torch.load(weights_only=True)`` only, never an arbitrary pickle."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping

import torch
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from pengi.conversion.keymap import ConversionError, names


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
    """Remove the ``module.`` prefix that DataParallel puts on every key (torch's own
    `consume_prefix_in_state_dict_if_present`), refusing a checkpoint that has a key both with and without it."""
    both = sorted(k for k in state_dict if k.startswith("module.") and k[len("module."):] in state_dict)
    if both:
        raise ConversionError(f"keys occur both with and without the 'module.' prefix: {names(both)}")
    out = dict(state_dict)
    consume_prefix_in_state_dict_if_present(out, "module.")
    return out
