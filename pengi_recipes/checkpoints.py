"""Checkpoints that survive ``kill -9``.

accelerate writes them and rotates them: ``ProjectConfiguration(automatic_checkpoint_naming=True,
total_limit=checkpoint.keep_last)`` saves model, optimizer, scheduler and RNG states to
``output_dir/checkpoints/checkpoint_<n>`` and removes the oldest beyond ``keep_last``. pengi adds only the
completion mark: ``trainer_state.json`` (the step and the position in the data), written last, under a
temporary name renamed into place. A folder without it was cut short; resuming removes it and starts from the
newest complete one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil

from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration

STATE_FILE = "trainer_state.json"


class TiedWeightsNotice(logging.Filter):
    """accelerate warns "Removed shared tensor {...}" at every checkpoint of a model whose output layer is tied to
    its input embedding (GPT-2's), since safetensors stores a shared tensor once. The tie is the model's own and
    comes back on loading (the resume test checks the weights), so the notice says nothing to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


logging.getLogger("accelerate.utils.other").addFilter(TiedWeightsNotice())


def project_configuration(cfg: dict) -> ProjectConfiguration:
    return ProjectConfiguration(project_dir=cfg["output_dir"], automatic_checkpoint_naming=True,
                                total_limit=cfg["checkpoint"]["keep_last"])


def checkpoint_folders(accelerator: Accelerator) -> list[str]:
    """accelerate's checkpoint folders, oldest first."""
    root = os.path.join(accelerator.project_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    numbered = [(int(m.group(1)), name) for name in os.listdir(root) if (m := re.fullmatch(r"checkpoint_(\d+)", name))]
    return [os.path.join(root, name) for _, name in sorted(numbered)]


def save_checkpoint(accelerator: Accelerator, state: dict) -> str:
    """accelerate's checkpoint, then the completion mark; returns the folder."""
    accelerator.wait_for_everyone()
    folder = accelerator.save_state()
    if accelerator.is_main_process:
        tmp = os.path.join(folder, STATE_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(folder, STATE_FILE))
    accelerator.wait_for_everyone()
    return folder


def resume(accelerator: Accelerator) -> tuple[dict, str] | None:
    """Load the newest complete checkpoint (removing incomplete ones); its trainer state and folder, or None."""
    folders = checkpoint_folders(accelerator)
    complete = [f for f in folders if os.path.isfile(os.path.join(f, STATE_FILE))]
    if accelerator.is_main_process:
        for folder in folders:
            if folder not in complete:
                shutil.rmtree(folder)
    accelerator.wait_for_everyone()
    if not complete:
        return None
    latest = complete[-1]
    accelerator.load_state(latest)
    accelerator.project_configuration.iteration = int(latest.rsplit("_", 1)[1]) + 1  # the next one's number
    with open(os.path.join(latest, STATE_FILE), encoding="utf-8") as f:
        return json.load(f), latest
