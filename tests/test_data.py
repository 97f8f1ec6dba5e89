"""Manifests, corpus adapters on fixtures in each publisher's layout, batching, mixtures and the prompt cache."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from pengi.data import adapters
from pengi.data.dataset import AudioTextDataset
from pengi.data.manifest import load_manifest, write_manifest
from pengi.data.sampling import DurationBucketBatchSampler, mixture, readable
from pengi.data.tasks import prompt_for
from pengi.models.pengi.processing_pengi import PengiCollator

from .conftest import make_tiny, tone


def wav(path, seconds=0.5, sr=16000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, tone(440, seconds, sr), sr)


def write_csv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_audiocaps(tmp_path, caplog):
    write_csv(tmp_path / "train.csv", ["audiocap_id", "youtube_id", "start_time", "caption"],
              [[91139, "r1nicOVtvkQ", 130, "A woman talks nearby as water pours"],
               [58146, "UDGBjjwyaqE", 20, "Multiple clanging and clanking sounds"],
               [11542, "missingclip", 0, "A dog barks"]])
    wav(tmp_path / "audio" / "r1nicOVtvkQ.wav")
    wav(tmp_path / "audio" / "UDGBjjwyaqE.wav")
    with caplog.at_level(logging.WARNING, logger="pengi"):
        rows = list(adapters.audiocaps(str(tmp_path / "train.csv"), str(tmp_path / "audio")))
    assert [r["answer"] for r in rows] == ["A woman talks nearby as water pours",
                                           "Multiple clanging and clanking sounds"]
    assert all(r["prompt"] == "generate audio caption" and r["dataset"] == "audiocaps" for r in rows)
    assert "skipped 1 rows whose audio is missing" in caplog.text and "missingclip.wav" in caplog.text


def test_clotho_one_row_per_caption(tmp_path):
    write_csv(tmp_path / "clotho_captions_development.csv", ["file_name"] + [f"caption_{i}" for i in range(1, 6)],
              [["Distorted AM Radio noise.wav", "a radio hisses", "static crackles", "noise from a radio",
                "a radio is tuned", "white noise and static"]])
    wav(tmp_path / "development" / "Distorted AM Radio noise.wav")
    rows = list(adapters.clotho(str(tmp_path), "development"))
    assert len(rows) == 5 and rows[0]["answer"] == "a radio hisses"
    assert rows[4]["audio"].endswith("development/Distorted AM Radio noise.wav")


def test_clotho_aqa_confidence_filter(tmp_path):
    write_csv(tmp_path / "clotho_aqa_train.csv", ["file_name", "QuestionText", "answer", "confidence"],
              [["a.wav", "Is it raining?", "yes", "yes"], ["a.wav", "Is it raining?", "no", "no"],
               ["a.wav", "What is making the noise?", "rain", "maybe"]])
    wav(tmp_path / "audio_files" / "a.wav")
    rows = list(adapters.clotho_aqa(str(tmp_path / "clotho_aqa_train.csv"), str(tmp_path / "audio_files")))
    assert [(r["prompt"], r["answer"]) for r in rows] == [("question: Is it raining?", "yes"),
                                                          ("question: What is making the noise?", "rain")]
    strict = adapters.clotho_aqa(str(tmp_path / "clotho_aqa_train.csv"), str(tmp_path / "audio_files"), "yes")
    assert len(list(strict)) == 1


def test_esc50_folds(tmp_path):
    write_csv(tmp_path / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
              [["1-100032-A-0.wav", 1, 0, "dog", True, 100032, "A"],
               ["5-9032-A-0.wav", 5, 41, "chainsaw", False, 9032, "A"],
               ["2-1-A-1.wav", 2, 1, "crackling_fire", False, 1, "A"]])
    for name in ("1-100032-A-0.wav", "5-9032-A-0.wav", "2-1-A-1.wav"):
        wav(tmp_path / "audio" / name)
    rows = list(adapters.esc50(str(tmp_path), folds=[1, 2, 3, 4]))
    assert [r["answer"] for r in rows] == ["dog", "crackling fire"]
    assert rows[0]["prompt"] == "this is a sound of"
    assert [r["answer"] for r in adapters.esc50(str(tmp_path), folds=[5])] == ["chainsaw"]


def test_fsd50k_splits(tmp_path):
    gt = tmp_path / "FSD50K.ground_truth"
    write_csv(gt / "dev.csv", ["fname", "labels", "mids", "split"],
              [[64760, "Electric_guitar,Guitar,Music", "/m/02sgy,/m/0342h,/m/04rlf", "train"],
               [16399, "Bark,Dog", "/m/05tny_,/m/0bt9lr", "val"]])
    write_csv(gt / "eval.csv", ["fname", "labels", "mids"], [[37199, "Rain", "/m/06mb1"]])
    wav(tmp_path / "FSD50K.dev_audio" / "64760.wav")
    wav(tmp_path / "FSD50K.dev_audio" / "16399.wav")
    wav(tmp_path / "FSD50K.eval_audio" / "37199.wav")
    assert [r["answer"] for r in adapters.fsd50k(str(tmp_path), "train")] == ["electric guitar, guitar, music"]
    assert [r["answer"] for r in adapters.fsd50k(str(tmp_path), "val")] == ["bark, dog"]
    assert [r["answer"] for r in adapters.fsd50k(str(tmp_path), "eval")] == ["rain"]


def test_wavcaps_and_labelled_folder(tmp_path):
    data = {"num_captions_per_audio": 1, "data": [
        {"id": "180913", "file_name": "UK Mello.wav", "caption": "Ambient music plays softly.", "duration": 3.9},
        {"id": "Y-xxx.wav", "caption": "A car engine revs.", "duration": 10.0}]}
    (tmp_path / "fsd.json").write_text(json.dumps(data))
    wav(tmp_path / "flac" / "180913.flac")
    wav(tmp_path / "flac" / "Y-xxx.flac")
    rows = list(adapters.wavcaps(str(tmp_path / "fsd.json"), str(tmp_path / "flac")))
    assert [(os.path.basename(r["audio"]), r["answer"], r["duration"]) for r in rows] == [
        ("180913.flac", "Ambient music plays softly.", 3.9), ("Y-xxx.flac", "A car engine revs.", 10.0)]
    wav(tmp_path / "scenes" / "Street_Traffic" / "a.wav")
    wav(tmp_path / "scenes" / "park" / "sub" / "b.wav")
    rows = list(adapters.labelled_folder(str(tmp_path / "scenes"), task="acoustic_scene"))
    assert [(r["answer"], r["prompt"]) for r in rows] == [("street traffic", "this acoustic scene is"),
                                                         ("park", "this acoustic scene is")]


def test_missing_metadata_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="esc50.csv: not found"):
        list(adapters.esc50(str(tmp_path)))


def test_manifest_round_trip_jsonl_csv_and_streaming(tmp_path):
    wav(tmp_path / "clips" / "a.wav", seconds=2.0)
    rows = [{"audio": "clips/a.wav", "task": "caption", "answer": "a tone"},
            {"audio": "clips/a.wav", "offset": 0.5, "duration": 1.0, "task": "aqa",
             "prompt": prompt_for("aqa", question="is it loud?"), "answer": "no"}]
    for ext in ("jsonl", "csv"):
        path = tmp_path / f"m.{ext}"
        assert write_manifest(rows, path) == 2
        ds = load_manifest(path)
        assert ds[0]["audio"] == str(tmp_path / "clips" / "a.wav")
        assert ds[0]["prompt"] == "generate audio caption" and ds[0]["offset"] == 0.0
        assert ds[1]["prompt"] == "question: is it loud?" and ds[1]["duration"] == 1.0
    streamed = list(load_manifest(tmp_path / "m.jsonl", streaming=True))
    assert [r["answer"] for r in streamed] == ["a tone", "no"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"audio": "x.wav", "task": "aqa", "answer": "yes"}) + "\n")
    with pytest.raises(ValueError, match="task 'aqa' needs the field 'question'"):
        load_manifest(bad)


def test_dataset_excerpts_crops_and_skips_unreadable_files(tmp_path, gpt2_tokenizer, caplog):
    sr = 16000
    x = np.concatenate([np.zeros(sr, np.float32), np.ones(2 * sr, np.float32) * 0.5])
    sf.write(tmp_path / "long.wav", x, sr, subtype="FLOAT")
    (tmp_path / "broken.wav").write_bytes(b"RIFFxxxxWAVE" + bytes(64))
    write_manifest([{"audio": "long.wav", "offset": 1.0, "duration": 1.0, "answer": "half"},
                    {"audio": "long.wav", "answer": "whole"},
                    {"audio": "broken.wav", "answer": "x"}], tmp_path / "m.jsonl")
    rows = load_manifest(tmp_path / "m.jsonl")
    model = make_tiny(gpt2_tokenizer)
    ds = AudioTextDataset(rows, model.processor, train=True, seed=3)
    excerpt = ds[0]["waveform"]
    assert excerpt.shape == (sr,) and torch.allclose(excerpt, torch.full((sr,), 0.5))
    first = ds[1]["waveform"]
    assert torch.equal(first, ds[1]["waveform"])  # the same crop for the same (seed, epoch, index)
    crops = set()
    for epoch in range(6):  # a 3 s clip cropped to 1 s: silence then tone, so the crop position shows in the sum
        ds.set_epoch(epoch)
        crops.add(round(float(ds[1]["waveform"].sum()), 3))
    assert len(crops) > 1
    with caplog.at_level(logging.WARNING, logger="pengi"):
        assert ds[2] is None
    assert "broken.wav: cannot decode" in caplog.text
    batch = PengiCollator(model.processor)([ds[0], ds[2], ds[1]])
    assert batch["waveforms"].shape == (2, sr) and batch["input_ids"].shape[0] == 2
    with caplog.at_level(logging.WARNING, logger="pengi"):
        assert len(readable(rows)) == 2
    assert "dropped 1 of 3 rows" in caplog.text


def test_bucket_sampler_groups_durations_and_is_seeded():
    lengths = list(np.random.default_rng(0).uniform(1, 30, 400))
    sampler = DurationBucketBatchSampler(lengths, batch_size=8, seed=1, bucket_batches=5)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(400)) and len(batches) == len(sampler)
    spread = np.mean([np.ptp([lengths[i] for i in b]) for b in batches])
    random_spread = np.mean([np.ptp(lengths[i:i + 8]) for i in range(0, 400, 8)])
    assert spread < random_spread / 5
    assert list(sampler) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_mixture_weights(tmp_path):
    import datasets

    a = datasets.Dataset.from_dict({"answer": ["a"] * 400})
    b = datasets.Dataset.from_dict({"answer": ["b"] * 100})
    mixed = mixture([a, b], [1.0, 3.0], seed=0)
    first = mixed[:200]["answer"]
    assert 0.6 < first.count("b") / 200 < 0.9


def test_prompt_cache_encodes_each_prompt_once(gpt2_tokenizer, bert_tokenizer):
    model = make_tiny(gpt2_tokenizer, bert_tokenizer)
    enc = model.processor.prompts(["generate audio caption", "this is a sound of", "generate audio caption"])
    reference = model.prompt_embedding(**enc)
    calls = []
    model.prompt_encoder.base.register_forward_hook(lambda module, args, out: calls.append(args))
    model.prompt_encoder.enable_cache()
    assert torch.allclose(model.prompt_embedding(**enc), reference, atol=1e-6)
    assert torch.allclose(model.prompt_embedding(**enc), reference, atol=1e-6)
    assert len(calls) == 1  # two distinct prompts, encoded together, once
    model.prompt_encoder.base.requires_grad_(True)  # a trainable backbone is never cached
    model.prompt_embedding(**enc)
    assert len(calls) == 2


def test_manifest_command(tmp_path, monkeypatch, caplog):
    """`pengi manifest` as users type it: values read by the adapter's signature, one clear line for a bad key or
    value and no file left behind, and paths that resolve from a relative root wherever the manifest is read."""
    from pengi.cli import main as cli_main

    write_csv(tmp_path / "fx" / "esc" / "meta" / "esc50.csv",
              ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
              [["1-1-A-0.wav", 1, 0, "dog", True, 1, "A"], ["5-1-A-1.wav", 5, 1, "rooster", True, 1, "A"]])
    wav(tmp_path / "fx" / "esc" / "audio" / "1-1-A-0.wav")
    wav(tmp_path / "fx" / "esc" / "audio" / "5-1-A-1.wav")
    monkeypatch.chdir(tmp_path)
    for folds, answers in (("folds=[1, 2, 3, 4]", ["dog"]), ("folds=5", ["rooster"]),
                           ("folds=1,5", ["dog", "rooster"])):
        assert cli_main(["manifest", "esc50", "root=fx/esc", folds, "--out", "m/rel/esc.jsonl"]) == 0, caplog.text
        assert [r["answer"] for r in load_manifest("m/rel/esc.jsonl")] == answers
    monkeypatch.chdir(tmp_path / "fx")  # read from elsewhere: the audio still resolves
    assert all(os.path.isfile(r["audio"]) for r in load_manifest(tmp_path / "m" / "rel" / "esc.jsonl"))
    monkeypatch.chdir(tmp_path)

    write_csv(tmp_path / "caps" / "train.csv", ["audiocap_id", "youtube_id", "start_time", "caption"],
              [["7", "abc", "30", "a dog barks"]])
    wav(tmp_path / "caps" / "audio" / "abc.wav")
    assert cli_main(["manifest", "audiocaps", "csv_path=caps/train.csv", "audio_dir=caps/audio",
                     "name={youtube_id}.wav", "--out", "caps.jsonl"]) == 0, caplog.text
    assert [r["answer"] for r in load_manifest("caps.jsonl")] == ["a dog barks"]
    write_csv(tmp_path / "aqa.csv", ["file_name", "QuestionText", "answer", "confidence"],
              [["abc.wav", "is it a dog?", "yes", "yes"], ["abc.wav", "is it loud?", "no", "maybe"]])
    assert cli_main(["manifest", "clotho_aqa", "csv_path=aqa.csv", "audio_dir=caps/audio", "min_confidence=yes",
                     "--out", "aqa.jsonl"]) == 0, caplog.text
    assert [r["answer"] for r in load_manifest("aqa.jsonl")] == ["yes"]

    caplog.clear()
    for options, message in ((["folds=five"], "folds: got 'five'; it takes a list of whole numbers"),
                             (["fold=5"], "fold: is not an option of esc50 (its options: root, folds); did you mean "
                                          "folds?"),
                             ([], "esc50: needs root=..."),
                             (["root=fx/esc", "folds"], "folds: options are KEY=VALUE")):
        assert cli_main(["manifest", "esc50", *options, "--out", "bad.jsonl"]) == 2
        assert message in caplog.text and "Traceback" not in caplog.text, caplog.text
        assert not os.path.exists("bad.jsonl")
    assert cli_main(["manifest", "clotho_aqa", "csv_path=aqa.csv", "audio_dir=caps/audio", "min_confidence=sure",
                     "--out", "bad.jsonl"]) == 2
    assert "min_confidence: got 'sure'; it takes one of no, maybe, yes" in caplog.text
    assert cli_main(["manifest", "esc50", "root=nowhere", "--out", "bad.jsonl"]) == 2
    assert not os.path.exists("bad.jsonl")
    result = subprocess.run([sys.executable, "-m", "pengi", "manifest", "esc50", "root=fx/esc", "folds=1",
                             "--out", "sub.jsonl"], capture_output=True, text=True)  # the installed entry point
    assert result.returncode == 0 and "wrote 1 rows" in result.stderr, result.stderr


class EpochOfItem(AudioTextDataset):
    def __getitem__(self, index):
        return self.epoch


def test_persistent_loader_workers_see_the_epoch_the_main_process_sets():
    # The epoch seeds the training crops; persistent workers hold their own copy of the dataset.
    dataset = EpochOfItem([{}] * 4, processor=None)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2, persistent_workers=True)
    seen = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        seen.append(sorted(set(loader)))
    assert seen == [[0], [1], [2]]
