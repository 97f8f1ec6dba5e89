"""Decoding settings: what a request asks `generate` to do, checked, and the batch key it implies.

Requests whose settings are equal share batches. Greedy and beam search give the same answer in any batch
(prefixes have a fixed length), so they batch freely. Sampling draws random numbers for every row of a batch, so
a sampled request with a ``seed`` runs in a model call of its own under that seed (repeatable); sampled requests
without a seed batch together (each answer is then a fair sample, but not repeatable).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import bad_request

MAX_BEAMS = 16
MAX_SEQUENCES = 16
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int | None = None
    num_beams: int | None = None
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    num_return_sequences: int = 1
    repetition_penalty: float | None = None
    length_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    seed: int | None = None
    return_scores: bool = False

    @property
    def seeded(self) -> bool:
        return self.do_sample and self.seed is not None

    def generate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `Pengi.generate` / `generate_from_prefix` (unset ones left to the model)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if getattr(self, f.name) is not None and f.name not in ("seed", "return_scores")}
        if not self.do_sample:
            out.pop("do_sample")
        if self.num_return_sequences == 1:
            out.pop("num_return_sequences")
        return out

    def batch_key(self, request_id: str) -> tuple:
        """Clips with equal keys may share a model call; a seeded sampled request gets a key of its own."""
        settings = self if self.do_sample or self.seed is None else replace(self, seed=None)
        return ("generate", settings, request_id if self.seeded else None)


# The options of pengi's own /v1/generate, as `generate` names them, with their types.
OPTION_TYPES: dict[str, type] = {
    "max_new_tokens": int, "num_beams": int, "do_sample": bool, "temperature": float, "top_p": float,
    "top_k": int, "num_return_sequences": int, "repetition_penalty": float, "length_penalty": float,
    "no_repeat_ngram_size": int, "seed": int, "return_scores": bool,
}


def coerce(value: Any, kind: type, param: str) -> Any:
    """A JSON value or a form field's string as ``kind`` (bool, int or float), or a 400 naming ``param``."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text == "" or text.lower() in ("none", "null"):
            return None
        if kind is bool:
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise bad_request(f"{param}: expected true or false, got {value!r}", param)
        try:
            value = float(text) if kind is float else int(text)
        except ValueError:
            raise bad_request(f"{param}: expected {'a number' if kind is float else 'an integer'}, got {value!r}",
                              param) from None
    if kind is bool:
        if not isinstance(value, bool):
            raise bad_request(f"{param}: expected true or false, got {value!r}", param)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(f"{param}: expected {'a number' if kind is float else 'an integer'}, got {value!r}", param)
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise bad_request(f"{param}: expected an integer, got {value!r}", param)
            value = int(value)
        return value
    value = float(value)
    if not math.isfinite(value):
        raise bad_request(f"{param}: must be a finite number, got {value!r}", param)
    return value


def build(options: Mapping[str, Any], *, max_new_tokens_limit: int, names: Mapping[str, str] | None = None
          ) -> Decoding:
    """Check decoding options (already coerced to their types) and make a `Decoding`.

    ``names`` maps an option to the request field it came from (e.g. ``max_new_tokens -> max_tokens``), so that
    errors name what the client sent. ``max_new_tokens_limit`` is what the LM's positions leave after the prefix.
    """
    names = dict(names or {})

    def name(option: str) -> str:
        return names.get(option, option)

    def at_least(option: str, low: float, inclusive: bool = True) -> None:
        v = options.get(option)
        if v is not None and (v < low if inclusive else v <= low):
            raise bad_request(f"{name(option)}: must be {'at least' if inclusive else 'greater than'} {low:g}, got "
                              f"{v!r}", name(option))

    def at_most(option: str, high: float) -> None:
        v = options.get(option)
        if v is not None and v > high:
            raise bad_request(f"{name(option)}: must be at most {high:g}, got {v!r}", name(option))

    at_least("max_new_tokens", 1)
    if (options.get("max_new_tokens") or 0) > max_new_tokens_limit:
        raise bad_request(f"{name('max_new_tokens')}: at most {max_new_tokens_limit} tokens fit in this model's LM "
                          f"after its prefix, got {options['max_new_tokens']}", name("max_new_tokens"))
    at_least("num_beams", 1)
    at_most("num_beams", MAX_BEAMS)
    at_least("num_return_sequences", 1)
    at_most("num_return_sequences", MAX_SEQUENCES)
    at_least("top_k", 0)
    at_least("top_p", 0, inclusive=False)
    at_most("top_p", 1)
    at_least("repetition_penalty", 0, inclusive=False)
    at_least("no_repeat_ngram_size", 0)
    at_least("seed", 0)
    at_most("seed", MAX_SEED)
    do_sample = bool(options.get("do_sample"))
    temperature = options.get("temperature")
    if temperature is not None and do_sample and temperature <= 0:
        raise bad_request(f"{name('temperature')}: sampling needs a temperature above 0, got {temperature!r}",
                          name("temperature"))
    at_least("temperature", 0)
    if do_sample and (options.get("num_beams") or 1) > 1:
        raise bad_request(f"{name('num_beams')}: beam search and sampling cannot be combined; set do_sample=false or "
                          "num_beams=1", name("num_beams"))
    n = options.get("num_return_sequences") or 1
    if n > 1 and not do_sample and (options.get("num_beams") or 1) < n:
        raise bad_request(f"{name('num_return_sequences')}: {n} sequences per clip need sampling (do_sample=true) "
                          f"or at least {n} beams (num_beams)", name("num_return_sequences"))
    values = {k: v for k, v in options.items() if v is not None}
    values["do_sample"] = do_sample
    values["num_return_sequences"] = n
    values["return_scores"] = bool(options.get("return_scores"))
    if not do_sample:  # sampling-only settings have no effect on greedy or beam search; keep keys equal
        for key in ("temperature", "top_p", "top_k", "seed"):
            values.pop(key, None)
    return Decoding(**values)
