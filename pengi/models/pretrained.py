"""What Pengi, CLAP and SLAP add to transformers' `PreTrainedModel`: a processor (feature extractor + tokenizers,
`pengi.models.processing`) saved beside the weights and loaded with them, and freezing re-applied after loading."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from pengi.errors import PengiInputError

TOKENIZER_KWARGS = ("cache_dir", "local_files_only", "revision", "token")


class WithProcessor:
    """Mixin placed before `PreTrainedModel`. Subclasses set ``processor_class`` and may define ``apply_freezing``."""

    processor_class: Any = None
    processor: Any = None

    def apply_freezing(self) -> None:
        """Freeze what the config says after loading; models with frozen parts override this."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        path = pretrained_model_name_or_path
        if os.path.exists(path) and not os.path.isdir(path):
            raise PengiInputError(str(path), "is a file; give the model folder")
        cls._check_model_type(path)
        model = super().from_pretrained(path, *args, **kwargs)
        model.apply_freezing()
        tok_kwargs = {k: kwargs[k] for k in TOKENIZER_KWARGS if k in kwargs}
        try:
            model.processor = cls.processor_class.from_pretrained(path, model.config, **tok_kwargs)
        except (OSError, ValueError) as err:  # weights without tokenizers still load, for tensor-level use
            model.processor = None
            model._missing_processor = f"{path}: {err}"
        return model

    @classmethod
    def _check_model_type(cls, path: str | os.PathLike) -> None:
        check_model_type(path, cls.config_class, cls.__name__)

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.processor is not None:
            self.processor.save_pretrained(save_directory)

    def _require_processor(self):
        if self.processor is None:
            reason = getattr(self, "_missing_processor", "")
            name = type(self).__name__
            raise RuntimeError(f"this model has no tokenizer attached: load it with {name}.from_pretrained(folder) "
                               f"from a folder that holds its tokenizer, or set model.processor = "
                               f"{self.processor_class.__name__}(...)" + (f" ({reason})" if reason else ""))
        return self.processor


def check_model_type(path: str | os.PathLike, config_class: Any, name: str) -> None:
    """Refuse a folder whose config.json holds another model type: it would load with random weights (or the
    wrong settings) and only a warning."""
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        return
    with open(config_file, encoding="utf-8") as f:
        found = json.load(f).get("model_type")
    expected = config_class.model_type
    if found is not None and found != expected:
        raise PengiInputError(str(path), f"holds a {found!r} model, not a {name} model (model_type {expected!r})")


def as_list(x: Any) -> list[Any]:
    """One input (a path, an (array, rate) pair, an audio dict, a string) or a sequence of them, as a list."""
    if isinstance(x, (str, os.PathLike, tuple, dict)):
        return [x]
    if isinstance(x, list):
        return x
    if isinstance(x, Sequence):
        return list(x)
    return [x]
