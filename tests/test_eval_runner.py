"""`pengi eval` end to end on the shipped model and synthetic data, kill-and-resume, the two ways of turning
generations into classes checked by hand, the benchmark files, and the adapters they need."""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from pengi.cli import build_parser
from pengi.cli import main as cli_main
from pengi.data import adapters
from pengi.evaluation.runner import check_settings
from pengi.evaluation.specs import SHIPPED_DIR, DatasetSpec, load_benchmark
from pengi.models.pengi import scoring
from pengi.synthetic import SOURCES, example

from .conftest import tone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = SHIPPED_DIR
SYNTHETIC = "synthetic"  # a shipped benchmark, by name
ENV = {**os.environ, "PYTHONPATH": ROOT}  # the subprocess imports this checkout, not another install
CLIPS = 32
CLASSES = sorted(SOURCES)


def eval_cmd(data, out, *extra):
    return [sys.executable, "-m", "pengi.cli", "eval", "--benchmark", SYNTHETIC, "--data-root", str(data),
            "--out", str(out), *map(str, extra)]


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def seed_of(row):
    return int(os.path.basename(row["audio"]).split(".")[0])


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    """``synthetic/validation.jsonl``: 32 held-out clips (4 of each source), five prompts each."""
    root = tmp_path_factory.mktemp("data")
    importlib.import_module("pengi_recipes.make_synthetic_data").main(
        ["--out", str(root / "synthetic"), "--train", "0", "--validation", str(CLIPS)])
    return root


@pytest.fixture(scope="module")
def full_run(synthetic_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "out"
    result = subprocess.run(eval_cmd(synthetic_data, out), capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr
    return out, json.load(open(out / "results.json")), result


def test_eval_synthetic_benchmark_end_to_end(full_run):
    out, results, proc = full_run
    data = results["datasets"]
    assert list(data) == ["synthetic_caption", "synthetic_questions", "synthetic_sound", "synthetic_metadata",
                          "synthetic_metadata_labels"]
    assert all(d["num_failed"] == 0 for d in data.values())

    caption = data["synthetic_caption"]["metrics"]
    assert data["synthetic_caption"]["num_clips"] == CLIPS
    assert caption["CIDEr-D"] > 5 and caption["BLEU_4"] > 0.8 and 0.4 < caption["METEOR"] <= 1
    assert caption["SPICE"] is None and "spice=False" in caption["unavailable"]["SPICE"]

    qa = data["synthetic_questions"]
    assert qa["num_clips"] == 2 * CLIPS and qa["metrics"]["num_yes_no"] == 2 * CLIPS
    assert qa["metrics"]["accuracy"] >= 0.9

    # Single-label classification: both methods, and the likelihood ranking recomputed from the raw scores.
    sound = data["synthetic_sound"]
    assert sound["classes"] == CLASSES
    assert sound["metrics"]["accuracy_similarity"] >= 0.8 and sound["metrics"]["accuracy_likelihood"] >= 0.8
    rows = read_jsonl(out / "predictions" / "synthetic_sound.jsonl")
    assert len(rows) == CLIPS and all(len(r["likelihood"]) == len(CLASSES) for r in rows)
    truth = [CLASSES.index(example(seed_of(r)).source) for r in rows]
    ranked_first = [max(range(len(CLASSES)), key=r["likelihood"].__getitem__) == t for r, t in zip(rows, truth)]
    assert sum(ranked_first) >= 0.8 * CLIPS
    assert sound["metrics"]["accuracy_likelihood"] == sum(ranked_first) / CLIPS
    exact = sum(r["text"] == example(seed_of(r)).source for r in rows) / CLIPS
    assert sound["metrics"]["generation_exact_match"] == exact
    assert sound["metrics"]["accuracy_similarity"] >= exact  # an exact generation is always its class

    metadata = data["synthetic_metadata"]["metrics"]
    assert metadata["exact_match"] >= 0.85 and metadata["exact_match"] <= metadata["similarity"] <= 1.0 + 1e-6
    labels = data["synthetic_metadata_labels"]
    assert labels["classes"] == sorted(CLASSES + ["loud", "quiet"])
    assert labels["metrics"]["mAP_similarity"] >= 0.85 and 0 < labels["metrics"]["mAP_likelihood"] <= 1

    report = (out / "results.md").read_text()
    assert "| synthetic_sound | classification | 32 | accuracy_likelihood |" in report
    assert "| starter model report |" in report and "| 0.9375 |" in report  # the reference column
    assert report in proc.stdout
    for png in ("scores.png", "confusion_synthetic_sound_similarity.png", "confusion_synthetic_sound_likelihood.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert not list(out.glob("confusion_synthetic_metadata*"))  # multi-label and QA have no confusion matrix


def test_interrupted_evaluation_resumes_to_the_same_results(full_run, synthetic_data, tmp_path):
    reference_out, reference, _ = full_run
    out = tmp_path / "out"
    only = ["synthetic_questions", "synthetic_sound"]
    cmd = eval_cmd(synthetic_data, out, "--only", *only, "--batch-size", 1, "--quiet")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)

    def written():
        return sum(len(p.read_text().splitlines()) for p in (out / "predictions").glob("*.jsonl"))

    deadline = time.time() + 120
    while time.time() < deadline and (not (out / "predictions").exists() or written() < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= written() < 3 * CLIPS and not (out / "results.json").exists(), "should have been killed part-way"
    first = sorted((out / "predictions").glob("*.jsonl"))[-1]
    with open(first, "a") as f:
        f.write('{"audio": "half a li')  # as if killed in the middle of a write

    result = subprocess.run(cmd[:-1], capture_output=True, text=True, env=ENV, timeout=300)  # not --quiet
    assert result.returncode == 0, result.stderr
    assert "already in" in result.stderr
    for name, count in (("synthetic_questions", 2 * CLIPS), ("synthetic_sound", CLIPS)):
        rows = read_jsonl(out / "predictions" / f"{name}.jsonl")
        assert len(rows) == count and len({(r["audio"], r["prompt"]) for r in rows}) == count
        uninterrupted = {(r["audio"], r["prompt"]): r["text"] for r in
                         read_jsonl(reference_out / "predictions" / f"{name}.jsonl")}
        assert {(r["audio"], r["prompt"]): r["text"] for r in rows} == uninterrupted
    resumed = json.load(open(out / "results.json"))
    assert list(resumed["datasets"]) == only
    for name in only:
        assert_same(resumed["datasets"][name], reference["datasets"][name])


def assert_same(a, b):
    """Equal, with floats compared to 1e-6 (the resumed run batched clips differently)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9)
    else:
        assert a == b


def test_likelihood_scores_equal_the_forward_loss(default_model):
    """Each class's score is minus `Pengi.forward`'s loss with that class as the answer, however it is batched."""
    proc = default_model.processor
    clips = [example(5), example(10)]  # noise, falling chirp
    waves = torch.stack([proc.clip(proc.load((e.audio, e.sample_rate))) for e in clips])
    prompts = ["this is a sound of"] * 2
    scores = scoring.class_log_likelihoods(default_model, waves, prompts, CLASSES, batch_size=3)
    assert scores.shape == (2, len(CLASSES))
    assert torch.allclose(scores, scoring.class_log_likelihoods(default_model, waves, prompts, CLASSES), atol=1e-5)
    with torch.no_grad():
        for i, e in enumerate(clips):
            for c, name in enumerate(CLASSES):
                batch = proc(audio=[(e.audio, e.sample_rate)], prompts=[prompts[i]], answers=[name])
                assert scores[i, c].item() == pytest.approx(-default_model(**batch).loss.item(), abs=1e-5)
            assert CLASSES[int(scores[i].argmax())] == e.source


def test_similarity_mapping_by_hand(default_model):
    """No prompt encoder: mean of the LM's token embeddings, cosine; exact (case-insensitive) names win."""
    tok = default_model.processor.tokenizer
    table = default_model.lm.get_input_embeddings().weight.detach()

    def by_hand(text):
        return F.normalize(table[tok(text, add_special_tokens=False)["input_ids"]].mean(0), dim=0)

    texts = ["a low tone", "rising", "clicks and beeps"]
    expected = torch.stack([by_hand(t) for t in texts]) @ torch.stack([by_hand(c) for c in CLASSES]).T
    scores = scoring.similarity_scores(default_model, texts, CLASSES)
    assert torch.allclose(scores, expected, atol=1e-5)
    mapped = scoring.map_to_classes(default_model, texts + ["LOW TONE ", ""], CLASSES)
    assert mapped == [int(expected[i].argmax()) for i in range(3)] + [CLASSES.index("low tone"), -1]

    labels = scoring.multilabel_similarity(default_model, ["loud, low tone"], ["quiet", "loud", "low tone", "noise"])
    assert labels[0, 1].item() == pytest.approx(1.0) and labels[0, 2].item() == pytest.approx(1.0)
    assert labels[0, 0] < 1 - 1e-3 and labels[0, 3] < 1 - 1e-3
    best = scoring.answer_similarity(default_model, ["yes", "a low tone"], [["no", "yes"], ["noise"]])
    assert best[0] == pytest.approx(1.0) and best[1] == pytest.approx(float(by_hand("a low tone") @ by_hand("noise")))


def test_similarity_uses_the_prompt_encoder_when_there_is_one(tiny_model_with_encoder):
    model = tiny_model_with_encoder
    texts = ["generate audio caption", "this is a sound of"]
    expected = F.normalize(model.embed_prompts(texts).float(), dim=-1)
    assert torch.allclose(scoring.text_embeddings(model, texts), expected, atol=1e-6)


def test_changed_settings_do_not_mix_with_cached_predictions(tmp_path):
    path = str(tmp_path / "predictions" / "x.jsonl")
    check_settings(path, {"model": "a", "generation": {"num_beams": 1}}, overwrite=False)
    open(path, "w").write('{"audio": "a.wav", "prompt": "p", "text": "t"}\n')
    check_settings(path, {"model": "a", "generation": {"num_beams": 1}}, overwrite=False)  # same: kept
    assert os.path.exists(path)
    with pytest.raises(ValueError, match="other settings \\(generation\\).*--overwrite"):
        check_settings(path, {"model": "a", "generation": {"num_beams": 3}}, overwrite=False)
    check_settings(path, {"model": "a", "generation": {"num_beams": 3}}, overwrite=True)
    assert not os.path.exists(path)


def test_bad_benchmarks_fail_clearly(tmp_path, caplog):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  - {name: x, manifest: m.jsonl, kind: caption, num_beam: 3}\n")
    with pytest.raises(ValueError, match="unknown keys \\['num_beam'\\]"):
        load_benchmark(bad)
    with pytest.raises(ValueError, match="kind must be one of"):
        DatasetSpec(name="x", manifest="m", kind="captioning")
    with pytest.raises(ValueError, match="prompts \\(the questions\\)"):
        DatasetSpec(name="x", manifest="m", kind="aqa", prompt="question: why?")
    with caplog.at_level(logging.ERROR, logger="pengi"):
        code = cli_main(["eval", "--benchmark", SYNTHETIC, "--data-root", str(tmp_path), "--out", str(tmp_path / "o"),
                         "--quiet"])
    assert code == 2 and "synthetic/validation.jsonl" in caplog.text and "pengi manifest" in caplog.text


def test_data_root_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("PENGI_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert load_benchmark(SYNTHETIC).datasets[0].manifest == os.path.join("data", "synthetic", "validation.jsonl")
    assert load_benchmark(os.path.join(BENCHMARKS, "synthetic.yaml")).datasets == load_benchmark(SYNTHETIC).datasets
    monkeypatch.setenv("PENGI_DATA_ROOT", str(tmp_path))
    assert load_benchmark(SYNTHETIC).datasets[0].manifest == str(tmp_path / "synthetic" / "validation.jsonl")
    assert load_benchmark(SYNTHETIC, "/elsewhere").datasets[0].manifest == "/elsewhere/synthetic/validation.jsonl"


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(BENCHMARKS) if f.endswith(".yaml")))
def test_benchmark_file_names_the_commands_that_make_its_manifests(name, monkeypatch):
    """The header's `pengi manifest` commands parse, use the adapter's real options and write the manifests
    that the datasets read; its `pengi eval` line runs this file."""
    monkeypatch.delenv("PENGI_DATA_ROOT", raising=False)
    path = os.path.join(BENCHMARKS, name)
    commands = [shlex.split(line.lstrip("#").strip()) for line in open(path) if line.startswith("#   ")]
    written = set()
    for words in commands:
        if words[:2] == ["pengi", "manifest"]:
            args = build_parser().parse_args(words[1:])
            options = {item.partition("=")[0] for item in args.options}
            assert options <= set(inspect.signature(adapters.ADAPTERS[args.corpus]).parameters), words
            written.add(args.out)
        elif words[:3] == ["python", "-m", "pengi_recipes.make_synthetic_data"]:
            out = words[words.index("--out") + 1]
            written |= {f"{out}/validation.jsonl", f"{out}/train.jsonl"}
    assert any(w[:2] == ["pengi", "eval"] and name.removesuffix(".yaml") in w for w in commands), "no pengi eval line"
    bench = load_benchmark(name.removesuffix(".yaml"))  # by name, as the header's command gives it
    for spec in bench.datasets:
        assert spec.manifest in written, (spec.name, written)


def test_urbansound8k_adapter(tmp_path):
    meta = tmp_path / "metadata"
    meta.mkdir()
    (meta / "UrbanSound8K.csv").write_text(
        "slice_file_name,fsID,start,end,salience,fold,classID,class\n"
        "100032-3-0-0.wav,100032,0.0,0.317551,1,5,3,dog_bark\n"
        "100263-2-0-117.wav,100263,58.5,62.5,1,5,2,children_playing\n"
        "101415-3-0-2.wav,101415,1.0,5.0,1,10,3,dog_bark\n"
        "99999-1-0-0.wav,99999,0.0,4.0,1,1,1,car_horn\n")
    for fold, clip in ((5, "100032-3-0-0.wav"), (5, "100263-2-0-117.wav"), (10, "101415-3-0-2.wav")):
        (tmp_path / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "audio" / f"fold{fold}" / clip, tone(440, 0.3, 22050), 22050)
    rows = list(adapters.urbansound8k(str(tmp_path)))  # the fold-1 clip is missing: skipped
    assert [(os.path.relpath(r["audio"], tmp_path), r["answer"]) for r in rows] == [
        ("audio/fold5/100032-3-0-0.wav", "dog bark"), ("audio/fold5/100263-2-0-117.wav", "children playing"),
        ("audio/fold10/101415-3-0-2.wav", "dog bark")]
    assert all(r["prompt"] == "this is a sound of" and r["dataset"] == "urbansound8k" for r in rows)
    assert [r["answer"] for r in adapters.urbansound8k(str(tmp_path), folds=[10])] == ["dog bark"]


def test_gtzan_adapter(tmp_path):
    for genre, n in (("blues", 0), ("blues", 1), ("hiphop", 7)):
        folder = tmp_path / "genres" / genre
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{genre}.{n:05d}.wav", tone(220, 0.3, 22050), 22050)
    (tmp_path / "genres" / "blues" / "README.txt").write_text("not audio")
    rows = list(adapters.gtzan(str(tmp_path)))
    assert [(os.path.basename(r["audio"]), r["answer"]) for r in rows] == [
        ("blues.00000.wav", "blues"), ("blues.00001.wav", "blues"), ("hiphop.00007.wav", "hiphop")]
    assert all(r["prompt"] == "this music genre is" and r["dataset"] == "gtzan" for r in rows)
    with pytest.raises(FileNotFoundError, match="no genres/ folder"):
        list(adapters.gtzan(str(tmp_path / "genres" / "blues")))
