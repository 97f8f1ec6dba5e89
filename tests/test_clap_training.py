"""The CLAP recipe end to end: a tiny CLAP trained briefly on the generated scene corpus classifies held-out scenes
zero-shot ("This is a sound of {label}") at twice chance or better, though it never saw that template."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from tokenizers import BertWordPieceTokenizer
from transformers import BertTokenizerFast

from pengi import CLAP
from pengi.data.manifest import load_manifest
from pengi.synthetic.scenes import TYPES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_corpus(out) -> None:
    importlib.import_module("pengi_recipes.make_scene_corpus").main(
        ["--out", str(out), "--train", "1000", "--validation", "20", "--test", "200", "--questions-per-scene", "1"])


@pytest.mark.slow  # about 3 minutes on 2 idle cores
def test_briefly_trained_clap_beats_chance_at_zero_shot(tmp_path):
    data = tmp_path / "scenes"
    make_corpus(data)
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator((r["answer"] for r in load_manifest(data / "train.jsonl")), vocab_size=400)
    wordpiece.save_model(str(tmp_path))
    BertTokenizerFast(vocab=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path / "tokenizer")

    result = subprocess.run(
        [sys.executable, "-m", "pengi_recipes.train_clap", "--config", "clap/demo", "--set",
         f"output_dir={tmp_path / 'run'}",
         f"model.tokenizer={tmp_path / 'tokenizer'}", f"data.train=[{{manifest: {data / 'train.jsonl'}}}]",
         f"data.validation={data / 'validation.jsonl'}", "data.batch_size=32", "data.num_workers=0",
         "optim.max_steps=800", "optim.warmup_steps=20", "eval.every=800", "checkpoint.every=1000", "log.every=50"],
        capture_output=True, text=True, timeout=3600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val/t2a_R@1" in result.stdout

    clap = CLAP.from_pretrained(tmp_path / "run" / "final").eval()
    labels = {r["audio"]: r["answer"] for r in load_manifest(data / "test.jsonl")
              if r["task"] == "sound_event" and "," not in r["answer"]}  # clips of a single source type
    assert len(labels) >= 40
    classes = list(TYPES)
    probs = clap.zero_shot(list(labels), classes)
    predicted = [classes[i] for i in probs.argmax(dim=-1).tolist()]
    accuracy = sum(p == t for p, t in zip(predicted, labels.values())) / len(labels)
    assert accuracy >= 2 / len(classes), f"zero-shot accuracy {accuracy:.3f} (chance {1 / len(classes):.3f})"
