"""pengi_recipes.train_slap as users run it: each objective's loss goes down on a tiny run of variable-length scenes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from pengi import SLAP

from .test_training import ROOT, load_recipe_module

RECIPE = ("-m", "pengi_recipes.train_slap")
CONFIG = "slap/tiny"  # a shipped config, by name


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes-var")
    load_recipe_module("make_scene_corpus").main(["--out", str(out), "--train", "8", "--validation", "4",
                                                  "--test", "0", "--seconds", "4", "8"])
    return out


def logged_losses(stdout: str) -> dict[str, list[float]]:
    losses: dict[str, list[float]] = {}
    for line in stdout.splitlines():
        if line.startswith("step ") and "train/" in line:
            for name, value in re.findall(r"train/(\w+) ([\d.]+)", line):
                losses.setdefault(name, []).append(float(value))
    return losses


@pytest.mark.slow  # minutes on a shared 2-core CPU; test_slap.py checks the same losses decrease in-process
def test_each_loss_decreases_on_a_tiny_run(tmp_path, scenes):
    out = tmp_path / "run"
    cmd = [sys.executable, *RECIPE, "--config", CONFIG, "--set", f"output_dir={out}",
           f"data.train=[{{manifest: {scenes / 'train.jsonl'}}}]", f"data.validation={scenes / 'validation.jsonl'}",
           "data.batch_size=4", "data.num_workers=0", "optim.max_steps=40", "optim.warmup_steps=4", "optim.lr=3e-3",
           "log.every=1", "eval.every=40", "checkpoint.every=40", "train.pack=true"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = logged_losses(result.stdout)
    assert set(losses) == {"contrastive", "ssl", "caption", "loss"} and len(losses["ssl"]) == 40
    for name, values in losses.items():
        first, last = sum(values[:8]) / 8, sum(values[-8:]) / 8
        assert last < 0.85 * first, f"{name}: {first:.3f} -> {last:.3f}"
    assert "val/t2a_R@1" in result.stdout
    model = SLAP.from_pretrained(out / "final").eval()
    assert model.processor is not None and torch.isfinite(model.embed_audio(str(scenes / "validation" / "0.wav"))).all()


@pytest.mark.slow  # two short recipe runs
def test_resumed_run_ends_with_the_same_weights_teacher_included(tmp_path, scenes):
    """A run resumed from its step-4 checkpoint ends where the uninterrupted run ends: weights, EMA teacher and
    its update count (all in the model's state dict, saved by accelerate's save_state)."""
    straight = tmp_path / "straight"

    def cmd(out):
        return [sys.executable, *RECIPE, "--config", CONFIG, "--set", f"output_dir={out}",
                f"data.train=[{{manifest: {scenes / 'train.jsonl'}}}]", "data.validation=null", "data.batch_size=4",
                "data.num_workers=0", "optim.max_steps=8", "optim.warmup_steps=2", "log.every=4",
                "checkpoint.every=4", "checkpoint.keep_last=2", "eval.every=1000"]

    result = subprocess.run(cmd(straight), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "final")
    shutil.rmtree(resumed / "checkpoints" / "checkpoint_1")  # as if killed after the step-4 checkpoint
    result = subprocess.run(cmd(resumed), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(step 4)" in result.stdout
    a, b = (load_file(str(folder / "final" / "model.safetensors")) for folder in (straight, resumed))
    assert a.keys() == b.keys() and int(a["teacher.n_averaged"]) == 9  # a copy at the start, then 8 updates
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-5
