"""What the training recipes share: YAML configs with ``--set`` overrides, and crash-safe checkpoints.

Imported by the recipes as scripts (``python recipes/train_x.py`` puts this folder on the path).
"""

from __future__ import annotations

import json
import os
import shutil

import yaml
from accelerate import Accelerator


# ----------------------------------------------------------------------------- config
def load_config(path: str, overrides: list[str]) -> dict:
    with open(path) as f:
        cfg = yaml.safe_load(f)
    for item in overrides:
        key, _, value = item.partition("=")
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _number_or_value(yaml.safe_load(value))
    return cfg


def _number_or_value(value):
    """YAML 1.1 reads ``3e-3`` as a string; take it as the number a user meant."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


# ----------------------------------------------------------------------------- checkpoints
def latest_checkpoint(folder: str) -> str | None:
    if not os.path.isdir(folder):
        return None
    done = sorted(d for d in os.listdir(folder) if d.startswith("step_"))
    return os.path.join(folder, done[-1]) if done else None


def save_checkpoint(accelerator: Accelerator, folder: str, state: dict, keep_last: int) -> None:
    """Write to a temporary folder, then rename: a checkpoint folder named step_N is always complete."""
    final = os.path.join(folder, f"step_{state['step']:08d}")
    tmp = os.path.join(folder, f".tmp_step_{state['step']:08d}")
    if accelerator.is_main_process and os.path.exists(tmp):
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    if accelerator.is_main_process:
        with open(os.path.join(tmp, "trainer_state.json"), "w") as f:
            json.dump(state, f)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in sorted(d for d in os.listdir(folder) if d.startswith("step_"))[:-keep_last]:
            shutil.rmtree(os.path.join(folder, old))
    accelerator.wait_for_everyone()
