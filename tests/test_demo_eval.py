"""The demo model's proof script (pengi_recipes/evaluate_demo_model.py): scores, both controls and the context bound,
on a small generated scene corpus and a tiny random model saved to disk."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pengi.data.manifest import load_manifest

from .conftest import make_tiny
from .test_training import load_recipe_module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    load_recipe_module("make_scene_corpus").main(["--out", str(out), "--train", "12", "--validation", "2",
                                                  "--test", "4", "--questions-per-scene", "4"])
    return out


@pytest.fixture()
def evaluate():
    return load_recipe_module("evaluate_demo_model").main


def test_report_has_scores_controls_and_bound(tmp_path, corpus, gpt2_tokenizer, evaluate, capsys):
    model = make_tiny(gpt2_tokenizer, append_prompt_tokens=True)
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "report.json"
    evaluate(["--model", str(tmp_path / "model"), "--test", str(corpus / "test.jsonl"), "--train",
              str(corpus / "train.jsonl"), "--out", str(out), "--batch-size", "8", "--no-caption-metrics",
              "--context-bound"])
    report = json.loads(out.read_text())
    test, train = list(load_manifest(corpus / "test.jsonl")), list(load_manifest(corpus / "train.jsonl"))
    assert report["num_clips"] == 4 and report["num_rows"] == len(test) == 4 * 7
    qa = [r for r in test if r["task"] == "aqa"]
    types = sorted({r["question_type"] for r in qa})
    for run in ("model", "shuffled_audio", "majority_answer", "context_bound"):
        assert set(report[run]["qa"]) == {"accuracy", *types}
        assert all(0 <= v <= 1 for v in report[run]["qa"].values())
    # The majority control answers each question type with the training set's most frequent answer.
    majority = {t: Counter(r["answer"] for r in train if r["question_type"] == t).most_common(1)[0][0] for t in types}
    hits = sum(majority[r["question_type"]] == r["answer"] for r in qa if r["question_type"] in majority)
    assert report["majority_answer"]["qa"]["accuracy"] == pytest.approx(hits / len(qa))
    assert "classification_accuracy" in report["model"] and "caption" not in report["model"]  # no Java asked for
    table = (tmp_path / "report.md").read_text()
    assert table.startswith("| score | model | shuffled audio | majority answer | LM given the true metadata |")
    assert table in capsys.readouterr().out
