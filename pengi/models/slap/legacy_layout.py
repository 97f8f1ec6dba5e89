"""SLAP folders saved before the EMA teacher and the caption decoder were maintained modules.

Two parts of the weights' layout changed (their config.json files are unchanged and load as they are):

* The teacher became `torch.optim.swa_utils.AveragedModel` around the same tower: ``teacher.<key>`` is now
  ``teacher.module.<key>`` plus the update count ``teacher.n_averaged``. The tensors are the same, so an old
  folder's teacher keys are renamed on loading (transformers' ``key_mapping``) and the missing count starts at 1
  (the teacher already holds an average): training resumes from the old teacher exactly.
* The caption decoder became transformers' GPT-2 with cross-attention (``decoder.lm.*``). The old one
  (``decoder.embed``, ``decoder.blocks.*``, ``decoder.norm``) rotated queries and keys by position (RoPE)
  where GPT-2 adds a learned position embedding, so even with its other weights mapped across it would compute
  a different function with untrained positions and caption nonsense. Such a folder is refused with what to do
  instead: load it without the decoder (``caption_weight=0``; the towers, projections and teacher are
  unchanged), or train a new decoder. pengi ships no SLAP weights, so only models users trained are affected.
"""

from __future__ import annotations

import json
import os
import re

from safetensors import safe_open

from pengi.errors import PengiInputError

OLD_DECODER = re.compile(r"^decoder\.(embed|blocks|norm|context)\.")  # names only the old decoder had
OLD_TEACHER = re.compile(r"^teacher\.(?!module\.|n_averaged$)")
TEACHER_KEY_MAPPING = {r"^teacher\.(?!module\.)": "teacher.module."}
WEIGHTS, INDEX = "model.safetensors", "model.safetensors.index.json"


def saved_keys(folder: str | os.PathLike) -> set[str] | None:
    """The tensor names of a local model folder's safetensors weights (read from the headers only), or None
    when ``folder`` is not a local folder with such weights."""
    folder = str(folder)
    if os.path.isfile(os.path.join(folder, INDEX)):
        with open(os.path.join(folder, INDEX), encoding="utf-8") as f:
            return set(json.load(f)["weight_map"])
    if os.path.isfile(os.path.join(folder, WEIGHTS)):
        with safe_open(os.path.join(folder, WEIGHTS), framework="pt") as f:
            return set(f.keys())
    return None


def _saved_caption_weight(folder: str) -> float:
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            return float(json.load(f).get("caption_weight", 1.0))
    except (OSError, ValueError):
        return 1.0


def legacy_key_mapping(folder: str | os.PathLike, caption_weight: float | None = None) -> dict[str, str] | None:
    """transformers ``key_mapping`` that loads ``folder``'s old-layout teacher, or None when there is nothing to
    rename. Raises `PengiInputError` for an old caption decoder when the model is to have one
    (``caption_weight``, by default the folder's own, is above 0)."""
    keys = saved_keys(folder)
    if not keys:
        return None
    weight = _saved_caption_weight(str(folder)) if caption_weight is None else caption_weight
    if weight > 0 and any(OLD_DECODER.match(k) for k in keys):
        raise PengiInputError(str(folder), (
            "its caption decoder is pengi's earlier hand-written one (decoder.embed, decoder.blocks, decoder.norm; "
            "rotary positions). SLAP's decoder is now transformers' GPT-2 with cross-attention (decoder.lm.*, "
            "learned positions), and the old weights cannot become its weights. Load the rest of the model with "
            "SLAP.from_pretrained(folder, caption_weight=0): embeddings, similarity, zero-shot, frames and locate "
            "are unchanged; to caption again, train a new decoder (docs/slap.md, 'Folders saved before the "
            "decoder was GPT-2')"))
    return dict(TEACHER_KEY_MAPPING) if any(OLD_TEACHER.match(k) for k in keys) else None
