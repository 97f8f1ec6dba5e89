"""The linear-probe recipe (pengi_recipes.linear_probe) on small separable problems, with a tiny random CLAP: a frozen
encoder with a 3-layer head separates low from high tones, embeddings are computed once, fine-tuning trains the
encoder, and multi-label sets are scored with mAP."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from pengi import CLAP, CLAPProcessor
from pengi.data.manifest import write_manifest
from pengi.modules.encoders import AudioEncoder
from pengi.presets import clap_tiny
from tests.test_training import load_recipe_module

CONFIG = "clap/linear-probe"  # a shipped config, by name


@pytest.fixture(scope="module")
def recipe():
    return load_recipe_module("linear_probe")


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory, gpt2_tokenizer) -> str:
    torch.manual_seed(0)
    config = clap_tiny(len(gpt2_tokenizer))
    model = CLAP(config)
    model.processor = CLAPProcessor(config, gpt2_tokenizer)
    folder = tmp_path_factory.mktemp("probe") / "clap"
    model.save_pretrained(folder)
    return str(folder)


def sound(rng: np.random.Generator, high: bool, noisy: bool = False) -> np.ndarray:
    """A 1 s tone, low (150-400 Hz) or high (2.5-5 kHz), at a random level and phase; optionally with noise."""
    freq = rng.uniform(2500, 5000) if high else rng.uniform(150, 400)
    t = np.arange(16000) / 16000
    x = rng.uniform(0.1, 0.6) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    if noisy:
        x = x + 0.3 * rng.standard_normal(t.size)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> tuple[str, str]:
    """Train (24 clips and an unreadable file) and test (16 clips) manifests of low and high tones, plus rows of
    another task that the probe must leave out."""
    folder = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    manifests = []
    for split, n in (("train", 24), ("test", 16)):
        rows = []
        for i in range(n):
            high = bool(i % 2)
            sf.write(folder / f"{split}{i}.wav", sound(rng, high), 16000)
            rows.append({"audio": f"{split}{i}.wav", "task": "sound_event", "answer": "high" if high else "low"})
        rows.append({"audio": f"{split}0.wav", "task": "caption", "answer": "a tone"})
        if split == "train":
            (folder / "broken.wav").write_bytes(b"RIFF....WAVEfmt " + bytes(64))
            rows.append({"audio": "broken.wav", "task": "sound_event", "answer": "low"})
        write_manifest(rows, folder / f"{split}.jsonl")
        manifests.append(str(folder / f"{split}.jsonl"))
    return manifests[0], manifests[1]


def run(recipe, clap_dir, train, test, out, *overrides, finetune=False) -> dict:
    args = ["--config", CONFIG, "--set", f"model={clap_dir}", f"output_dir={out}", f"data.train={train}",
            f"data.test={test}", "data.task=sound_event", "data.batch_size=8", "device=cpu", *overrides]
    return recipe.main(args + (["--finetune"] if finetune else []))


def test_frozen_l3_head_separates_tones_and_encodes_audio_once(recipe, clap_dir, tones, tmp_path, monkeypatch):
    calls = []
    forward = AudioEncoder.forward
    monkeypatch.setattr(AudioEncoder, "forward", lambda self, w: calls.append(len(w)) or forward(self, w))
    results = run(recipe, clap_dir, *tones, tmp_path, "head.layers=3")
    assert results["mode"] == "frozen L3" and results["metric"] == "accuracy"
    assert results["value"] >= 0.9, results
    assert results["classes"] == ["high", "low"] and results["num_test"] == 16
    assert len(results["train_loss"]) == 30 and results["train_loss"][-1] < results["train_loss"][0] / 2
    assert sum(calls) == 24 + 16  # every readable clip once, not once per epoch
    assert json.load(open(tmp_path / "results.json"))["value"] == results["value"]
    head = load_file(tmp_path / "head.safetensors")
    assert len(head) == 6 and head["net.4.weight"].shape == (2, clap_tiny(10).d_proj)


def test_finetuning_trains_the_encoder(recipe, clap_dir, tones, tmp_path):
    results = run(recipe, clap_dir, *tones, tmp_path, "optim.epochs=2", "finetune.lr=1e-3", finetune=True)
    assert results["mode"] == "finetune" and 0.0 <= results["value"] <= 1.0 and len(results["train_loss"]) == 2
    before, after = load_file(os.path.join(clap_dir, "model.safetensors")), load_file(tmp_path / "model" /
                                                                                      "model.safetensors")
    changed = [k for k in before if k.startswith("audio_encoder.base") and not torch.equal(before[k], after[k])]
    assert changed and all(torch.equal(before[k], after[k]) for k in before if k.startswith("text_encoder"))


def test_multi_label_is_scored_with_map(recipe, clap_dir, tmp_path):
    rng = np.random.default_rng(1)
    manifests = []
    for split, n in (("train", 32), ("test", 16)):
        rows = []
        for i in range(n):
            high, noisy = bool(i % 2), bool((i // 2) % 2)
            sf.write(tmp_path / f"{split}{i}.wav", sound(rng, high, noisy), 16000)
            rows.append({"audio": f"{split}{i}.wav", "task": "sound_event",
                         "answer": ", ".join(["high" if high else "low"] + (["noise"] if noisy else []))})
        write_manifest(rows, tmp_path / f"{split}.jsonl")
        manifests.append(str(tmp_path / f"{split}.jsonl"))
    results = run(recipe, clap_dir, *manifests, tmp_path / "out", "data.multi_label=true", "head.layers=3")
    assert results["metric"] == "mAP" and results["classes"] == ["high", "low", "noise"]
    assert results["value"] >= 0.9, results


def test_a_test_label_never_seen_in_training_is_an_error(recipe, clap_dir, tones, tmp_path):
    train, test = tones
    rows = [json.loads(line) for line in open(test)]
    rows[0]["answer"] = "medium"
    odd = tmp_path / "odd.jsonl"
    odd.write_text("".join(json.dumps({**r, "audio": os.path.join(os.path.dirname(test), r["audio"])}) + "\n"
                           for r in rows))
    with pytest.raises(ValueError, match="odd.jsonl: labels not in .*train.jsonl: medium"):
        run(recipe, clap_dir, train, str(odd), tmp_path)
