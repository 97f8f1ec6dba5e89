"""The CLAP commands end to end (`pengi zero-shot`, `pengi embed`, `pengi retrieve`) on real files, with a tiny
random CLAP saved to disk: what they write agrees with the library's API, runs resume, bad files become errors."""

from __future__ import annotations

import csv
import json
import os

import pytest
import soundfile as sf
import torch

from pengi import CLAP
from pengi.cli import main
from pengi.models.clap.embedding_index import EmbeddingIndex, paths_file
from tests.conftest import tone

LABELS = ["dog", "cat", "rain"]


@pytest.fixture(scope="module")
def clap(clap_dir) -> CLAP:
    return CLAP.from_pretrained(clap_dir).eval()


@pytest.fixture
def clips(tmp_path):
    """Five tones in three formats and rates (one nested), and a corrupt file."""
    folder = tmp_path / "clips"
    (folder / "nested").mkdir(parents=True)
    for i, freq in enumerate([200, 500, 1200, 3000]):
        sf.write(folder / f"tone{i}.wav", tone(freq, 1.0 + 0.3 * i, 16000), 16000)
    sf.write(folder / "nested" / "stereo.flac", tone(800, 2.0, 44100, channels=2), 44100)
    (folder / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt " + bytes(100))
    return folder


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def good_files(folder) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.suffix in (".wav", ".flac") and p.name != "corrupt.wav")


def test_zero_shot_folder_matches_the_api_resumes_and_reports_bad_files(clap_dir, clap, clips, tmp_path, capsys):
    out = tmp_path / "zs.jsonl"
    args = ["zero-shot", str(clips), "--model", clap_dir, "--labels", "dog, cat,rain", "--top-k", "2",
            "--batch-size", "2", "--out", str(out), "--quiet"]
    assert main(args) == 1  # one file failed, the others are done
    rows = read_jsonl(out)
    assert [r["audio"] for r in rows] == sorted(r["audio"] for r in rows) and len(rows) == 6
    errors = [r for r in rows if "error" in r]
    assert [os.path.basename(r["audio"]) for r in errors] == ["corrupt.wav"]
    assert "cannot decode" in errors[0]["error"] and "corrupt.wav: cannot decode" in capsys.readouterr().err

    good = [r for r in rows if "error" not in r]
    probs = clap.zero_shot([r["audio"] for r in good], LABELS)  # what the API says for the same files
    for row, p in zip(good, probs):
        assert row["prompt"] == "This is a sound of {label}"
        best = p.argsort(descending=True)[:2].tolist()
        assert row["labels"] == [LABELS[i] for i in best] and row["label"] == row["labels"][0]
        assert row["scores"] == pytest.approx(p[best].tolist(), abs=1e-4)

    # A rerun retries only the failed file; once it is readable, its row replaces the error row, in place.
    sf.write(clips / "corrupt.wav", tone(700, 1.0, 16000), 16000)
    assert main(args) == 0
    rows2 = read_jsonl(out)
    fixed = [i for i, r in enumerate(rows) if "error" in r][0]
    assert len(rows2) == 6 and rows2[:fixed] + rows2[fixed + 1:] == rows[:fixed] + rows[fixed + 1:]
    assert rows2[fixed]["audio"] == rows[fixed]["audio"] and "label" in rows2[fixed] and "error" not in rows2[fixed]
    # Other labels (or template) in the same file would mix two label sets: refused.
    assert main([*args[:4], "--labels", "dog,cat", *args[6:]]) == 2
    assert len(read_jsonl(out)) == 6


def test_zero_shot_csv_labels_file_task_template_and_multi_label(clap_dir, clap, clips, tmp_path):
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("happy\n\nsad\nangry\n")
    out = tmp_path / "zs.csv"
    assert main(["zero-shot", str(clips / "tone*.wav"), "--model", clap_dir, "--labels-file", str(labels_file),
                 "--task", "emotion", "--multi-label", "--top-k", "5", "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert len(rows) == 4 and rows[0]["prompt"] == "this person is feeling {label}"
    scores = clap.zero_shot(rows[0]["audio"], ["happy", "sad", "angry"], "this person is feeling {label}",
                            multi_label=True)[0]
    assert sorted(json.loads(rows[0]["scores"]), reverse=True) == pytest.approx(sorted(scores.tolist(),
                                                                                       reverse=True), abs=1e-4)
    assert len(json.loads(rows[0]["labels"])) == 3  # top-k is capped at the number of labels
    captions = tmp_path / "captions.csv"  # another command's results: not appended to
    captions.write_text("audio,prompt,start,end,window,windows,text,error\na.wav,generate audio caption,,,,,hi,\n")
    assert main(["zero-shot", str(clips), "--model", clap_dir, "--labels", "a,b", "--out", str(captions)]) == 2
    assert len(captions.read_text().splitlines()) == 2
    assert main(["zero-shot", str(clips), "--model", clap_dir, "--labels", "a,b", "--template", "a sound of",
                 "--out", str(tmp_path / "x.jsonl"), "--quiet"]) == 2
    assert main(["zero-shot", str(clips), "--model", clap_dir, "--labels", "a,b,a",
                 "--out", str(tmp_path / "x.jsonl"), "--quiet"]) == 2


def test_clap_commands_need_a_clap_model(clips, tmp_path, caplog):
    out = str(tmp_path / "x.jsonl")
    assert main(["zero-shot", str(clips), "--labels", "a,b", "--out", out, "--quiet"]) == 2
    assert "needs a CLAP or SLAP model folder (pengi ships none)" in caplog.text
    pengi_dir = tmp_path / "a_pengi_model"
    pengi_dir.mkdir()
    (pengi_dir / "config.json").write_text(json.dumps({"model_type": "pengi"}))
    assert main(["embed", str(clips), "--model", str(pengi_dir), "--out", str(tmp_path / "e.safetensors")]) == 2
    assert "holds a 'pengi' model, not a CLAP model" in caplog.text


def test_embed_folder_then_add_files(clap_dir, clap, clips, tmp_path):
    out = tmp_path / "index" / "emb.safetensors"
    assert main(["embed", str(clips), "--model", clap_dir, "--out", str(out), "--batch-size", "4", "--quiet"]) == 1
    index = EmbeddingIndex.load(str(out))
    assert index.paths == good_files(clips) and read_jsonl(paths_file(str(out)))[0] == {"audio": index.paths[0]}
    assert torch.allclose(index.embeddings, clap.embed_audio(index.paths), atol=1e-5)
    assert index.model == os.path.abspath(clap_dir)

    # A rerun embeds only the files not in the index yet, and keeps the rows already there.
    (clips / "corrupt.wav").unlink()
    sf.write(clips / "new.wav", tone(5000, 1.0, 16000), 16000)
    assert main(["embed", str(clips), "--model", clap_dir, "--out", str(out), "--quiet"]) == 0
    grown = EmbeddingIndex.load(str(out))
    assert grown.paths == index.paths + [str(clips / "new.wav")]
    assert torch.equal(grown.embeddings[:-1], index.embeddings)
    assert main(["embed", str(clips), "--model", clap_dir, "--out", str(tmp_path / "emb.npy"), "--quiet"]) == 2


def test_text_to_audio_finds_the_clip_whose_embedding_is_the_query(clap_dir, clap, tmp_path, capsys):
    """An index whose rows are the text embeddings of known queries among random distractors: each query must
    come back with its own row first (wrong text processing, ranking or row-to-file mapping would miss)."""
    queries = ["dog barking", "rain on a tin roof", "cars passing by"]  # distinct first words: the tiny text
    # encoder pools its first token and barely mixes in the others
    torch.manual_seed(1)
    distractors = torch.nn.functional.normalize(torch.randn(20, clap.config.d_proj), dim=-1)
    rows = torch.cat([distractors[:7], clap.embed_text(queries)[[2, 0, 1]], distractors[7:]])
    paths = [f"clip{i:02d}.wav" for i in range(len(rows))]
    EmbeddingIndex(os.path.abspath(clap_dir), paths, rows).save(str(tmp_path / "idx.safetensors"))
    capsys.readouterr()
    assert main(["retrieve", *queries, "--model", clap_dir, "--index", str(tmp_path / "idx.safetensors"),
                 "--top-k", "3"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["query"] for r in results] == queries
    assert [r["matches"][0]["audio"] for r in results] == ["clip08.wav", "clip09.wav", "clip07.wav"]
    assert all(r["matches"][0]["score"] == pytest.approx(1.0, abs=1e-4) for r in results)
    assert all(len(r["matches"]) == 3 and r["matches"][1]["score"] < 0.95 for r in results)


def test_audio_to_text_and_text_to_audio_over_embedded_files(clap_dir, clap, clips, tmp_path, capsys):
    texts = ["a low hum", "a high whistle", "birds singing", "an engine idling"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    assert main(["retrieve", str(clips), "--model", clap_dir, "--texts", str(tmp_path / "texts.txt"),
                 "--top-k", "4", "--quiet"]) == 1  # corrupt.wav is reported
    captured = capsys.readouterr()
    assert "corrupt.wav: cannot decode" in captured.err
    results = [json.loads(line) for line in captured.out.splitlines()]
    paths = good_files(clips)
    assert [r["query"] for r in results] == paths
    sims = clap.similarity(paths, texts)
    for r, s in zip(results, sims):
        assert [m["text"] for m in r["matches"]] == [texts[i] for i in s.argsort(descending=True).tolist()]

    out = tmp_path / "emb.safetensors"
    main(["embed", str(clips), "--model", clap_dir, "--out", str(out), "--quiet"])
    capsys.readouterr()
    assert main(["retrieve", "a low hum", "--model", clap_dir, "--index", str(out), "--top-k", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    ranked = clap.similarity(paths, "a low hum")[:, 0].argsort(descending=True)[:2].tolist()
    assert [m["audio"] for m in result["matches"]] == [paths[i] for i in ranked]


def test_retrieve_reports_a_bad_index(clap_dir, tmp_path, caplog):
    assert main(["retrieve", "a dog", "--model", clap_dir, "--index", str(tmp_path / "none.safetensors")]) == 2
    assert "none.safetensors: not found" in caplog.text
    EmbeddingIndex("elsewhere", ["a.wav"], torch.ones(1, 7)).save(str(tmp_path / "other.safetensors"))
    assert main(["retrieve", "a dog", "--model", clap_dir, "--index", str(tmp_path / "other.safetensors")]) == 2
    assert "made with another model" in caplog.text
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors at all")
    (tmp_path / "junk.jsonl").write_text("")
    assert main(["retrieve", "a dog", "--model", clap_dir, "--index", str(tmp_path / "junk.safetensors")]) == 2
    assert "not an embedding index" in caplog.text
