"""The `pengi` command end to end, as a user runs it: real files, real processes, real exit codes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import soundfile as sf

from pengi.synthetic import example


def run(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "pengi.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.fixture
def clips_dir(tmp_path):
    """Six synthetic clips in two formats, one corrupt file and one empty one."""
    folder = tmp_path / "clips"
    (folder / "nested").mkdir(parents=True)
    for seed in range(6):
        e = example(seed)
        target = folder / "nested" if seed % 2 else folder
        sf.write(target / f"clip{seed}.{'flac' if seed % 3 == 0 else 'wav'}", e.audio, e.sample_rate)
    (folder / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt " + bytes(100))
    (folder / "empty.flac").write_bytes(b"")
    (folder / "readme.txt").write_text("not audio, not picked up from a folder")
    return folder


def test_caption_folder_reports_bad_files_and_resumes(clips_dir, tmp_path):
    out = tmp_path / "captions.jsonl"
    first = run("caption", clips_dir, "--out", out, "--batch-size", 3)
    assert first.returncode == 1, first.stderr  # some files failed
    rows = read_jsonl(out)
    assert len(rows) == 8
    assert [r["audio"] for r in rows] == sorted(r["audio"] for r in rows)  # input order, errors in place
    errors = {os.path.basename(r["audio"]): r["error"] for r in rows if "error" in r}
    assert set(errors) == {"corrupt.wav", "empty.flac"}
    assert "cannot decode" in errors["corrupt.wav"] and "empty" in errors["empty.flac"]
    assert "corrupt.wav: cannot decode" in first.stderr
    texts = {os.path.basename(r["audio"]).split(".")[0]: r["text"] for r in rows if "text" in r}
    assert sum(texts[f"clip{s}"] == example(s).caption for s in range(6)) >= 4, texts

    # Re-running skips finished clips and retries only the failures.
    (clips_dir / "corrupt.wav").unlink()
    sf.write(clips_dir / "corrupt.wav", example(7).audio, 16000)
    second = run("caption", clips_dir, "--out", out)
    assert second.returncode == 1  # empty.flac still fails
    assert "6 of 8 already in" in second.stderr
    rows2 = read_jsonl(out)  # one row per input, the latest outcome, in place
    assert [r["audio"] for r in rows2] == [r["audio"] for r in rows]
    changed = {os.path.basename(a["audio"]): b for a, b in zip(rows, rows2) if a != b}
    assert set(changed) == {"corrupt.wav"} and "text" in changed["corrupt.wav"]
    assert "error" in next(r for r in rows2 if r["audio"].endswith("empty.flac"))
    third = run("caption", clips_dir, "--out", out)
    assert third.returncode == 1 and read_jsonl(out) == rows2  # a file that still fails keeps its one error row


def test_caption_resumes_after_being_killed(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(60):
        e = example(i)
        sf.write(folder / f"c{i:03d}.wav", e.audio, e.sample_rate)
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "pengi.cli", "caption", str(folder), "--out", str(out), "--batch-size", "1",
           "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(read_jsonl(out))
    assert 3 <= done_before < 60, "the run should have been killed part-way"
    with open(out, "a") as f:
        f.write('{"audio": "half a line')  # as if killed in the middle of a write
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(out)
    assert sorted(os.path.basename(r["audio"]) for r in rows) == [f"c{i:03d}.wav" for i in range(60)]
    assert all("text" in r for r in rows)


def test_caption_csv_manifest_glob_and_windows(clips_dir, tmp_path):
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["audio", "prompt"])
        w.writerow([str(clips_dir / "clip0.flac"), "this is a sound of"])
        w.writerow([os.path.relpath(clips_dir / "clip2.wav", tmp_path), ""])
    out = tmp_path / "out.csv"
    result = run("caption", manifest, str(clips_dir / "nested" / "*.wav"), "--out", out, "--dtype", "auto")
    assert result.returncode == 0, result.stderr
    assert "dtype: float32 (auto, on cpu)" in result.stderr
    rows = list(csv.DictReader(open(out)))
    assert [os.path.basename(r["audio"]) for r in rows] == ["clip0.flac", "clip2.wav", "clip1.wav", "clip5.wav"]
    assert rows[0]["prompt"] == "this is a sound of" and rows[0]["text"] == example(0).source
    assert rows[1]["prompt"] == "generate audio caption"

    long_clip = tmp_path / "long.wav"
    sf.write(long_clip, __import__("numpy").concatenate([example(s).audio for s in (1, 3)]), 16000)
    out2 = tmp_path / "windows.jsonl"
    result = run("caption", long_clip, "--windows", "--prompt", "this is a sound of", "--out", out2)
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(out2)
    assert [(r["start"], r["end"], r["window"], r["windows"]) for r in rows] == [(0.0, 1.0, 0, 2), (1.0, 2.0, 1, 2)]
    assert [r["text"] for r in rows] == [example(1).source, example(3).source]


def test_ask_and_describe(clips_dir, tmp_path):
    """`ask` and `describe` take what `caption` takes (folders, globs, manifests, --out, resume) and write the same
    rows; without --out, JSON lines on standard output."""
    result = run("ask", clips_dir / "nested" / "clip1.wav", "is this sound tonal?")
    assert result.returncode == 0, result.stderr
    [row] = [json.loads(x) for x in result.stdout.splitlines()]
    assert row["prompt"] == "question: is this sound tonal?"  # asked as Pengi's question prompt
    assert row["text"] == example(1).answer("question: is this sound tonal?")
    out = tmp_path / "answers.csv"
    result = run("ask", clips_dir, "question: is this sound tonal?", "--out", out, "--batch-size", "3")
    assert result.returncode == 1  # corrupt.wav and empty.flac are error rows; the others are answered
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ["audio", "prompt", "text", "error"] and len(rows) == 8
    answered = {os.path.basename(r["audio"]): r["text"] for r in rows if r["text"]}
    assert sum(answered[f"clip{s}.{'flac' if s % 3 == 0 else 'wav'}"] ==
               example(s).answer("question: is this sound tonal?") for s in range(6)) >= 5
    assert "6 of 8 already in" in run("ask", clips_dir, "question: is this sound tonal?", "--out", out).stderr

    result = run("describe", clips_dir / "clip0.flac", clips_dir / "corrupt.wav", clips_dir / "nested" / "clip3.flac")
    assert result.returncode == 1  # one file was bad; the others are still described
    assert "corrupt.wav: cannot decode" in result.stderr and "Traceback" not in result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [os.path.basename(x["audio"]) for x in lines] == ["clip0.flac", "corrupt.wav", "clip3.flac"]
    assert [set(x) for x in lines] == [{"audio", "caption", "metadata", "sound_events"}, {"audio", "error"},
                                       {"audio", "caption", "metadata", "sound_events"}]
    assert [x["sound_events"] for x in (lines[0], lines[2])] == [example(0).source, example(3).source]
    result = run("ask", clips_dir / "clip0.flac", clips_dir / "nested" / "clip3.flac", "this is a sound of")
    assert result.returncode == 0, result.stderr  # a task prompt is used as it is
    assert [json.loads(x)["text"] for x in result.stdout.splitlines()] == [example(0).source, example(3).source]


def test_bad_invocations_fail_clearly(clips_dir, tmp_path):
    """Exit status 1: the run went through and some inputs failed (each named); 2: it could not run at all."""
    result = run("ask", tmp_path / "nope.wav", "what is it?")
    assert result.returncode == 1 and "nope.wav: file not found" in result.stderr
    assert "Traceback" not in result.stderr
    result = run("caption", tmp_path / "empty_dir_*", "--out", tmp_path / "o.jsonl")
    assert result.returncode == 2 and "no audio files found" in result.stderr
    result = run("ask", clips_dir / "clip0.flac", "   ")
    assert result.returncode == 2 and "prompt is empty" in result.stderr
    if not __import__("torch").cuda.is_available():
        result = run("ask", clips_dir / "clip0.flac", "this is a sound of", "--device", "cuda")
        assert result.returncode == 2 and "--device: CUDA is not available" in result.stderr
    result = run("ask", clips_dir / "clip0.flac", "this is a sound of", "--device", "gpu7")
    assert result.returncode == 2 and "--device:" in result.stderr and "Traceback" not in result.stderr
    result = run("caption", clips_dir, "--out", tmp_path / "o.jsonl", "--model", tmp_path / "no_model_here")
    assert result.returncode == 2 and "no_model_here" in result.stderr and "Traceback" not in result.stderr


def in_process(capsys, *args) -> tuple[int, str, str]:
    """The pengi command run in this process (argparse's usage errors exit with status 2)."""
    from pengi.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_decoding_options_are_checked_and_sampling_is_seeded(clips_dir, caplog, capsys):
    clip = clips_dir / "clip0.flac"
    for options, message in ((["--num-beams", "0"], "argument --num-beams: must be at least 1, got 0"),
                             (["--max-new-tokens", "-3"], "argument --max-new-tokens: must be at least 1"),
                             (["--top-p", "1.5"], "argument --top-p: must be in (0, 1], got 1.5"),
                             (["--temperature", "0.7"], "--temperature: is a sampling option: add --do-sample"),
                             (["--seed", "3"], "--seed: only sampling is random: add --do-sample"),
                             (["--hop", "0.5"], "--hop: sets the distance between windows: add --windows"),
                             (["--windows", "--hop", "0"], "--hop: must be greater than 0 seconds")):
        caplog.clear()
        code, _, err = in_process(capsys, "caption", clip, *options)
        assert code == 2 and message in err + caplog.text, (options, err, caplog.text)

    # The same seed gives the same samples, whatever the batch; each clip's answer depends only on itself.
    sample = ("--do-sample", "--temperature", "1.5", "--top-k", "50", "--seed", "7", "--quiet")
    pair = (clips_dir / "clip0.flac", clips_dir / "clip2.wav")
    together = [json.loads(x)["text"] for x in in_process(capsys, "caption", *pair, "--batch-size", "2",
                                                          *sample)[1].splitlines()]
    alone = [json.loads(in_process(capsys, "caption", path, *sample)[1])["text"] for path in pair]
    assert together == alone and len(together) == 2


def test_long_audio_logs_and_outputs(tmp_path):
    long_clip = tmp_path / "long.wav"
    sf.write(long_clip, __import__("numpy").concatenate([example(s).audio for s in (1, 3, 5)]), 16000)
    result = run("caption", long_clip, tmp_path / "missing.wav")
    assert "long.wav is 3.0 s long, longer than the model's 1.0 s window: only its central 1.0 s" in result.stderr
    assert "use --windows" in result.stderr
    rows = [json.loads(x) for x in result.stdout.splitlines()]  # --out - (the default): JSON lines on stdout
    assert [set(r) for r in rows] == [{"audio", "prompt", "text"}, {"audio", "prompt", "error"}]
    result = run("caption", long_clip, "--windows", "--hop", "1.5", "--out", "-")
    assert "longer than the model's 1.00 s window: the audio between windows is skipped" in result.stderr
    assert [json.loads(x)["start"] for x in result.stdout.splitlines()] == [0.0, 1.5]
    assert not (tmp_path / "-").exists()

    out = tmp_path / "captions.csv"
    assert run("caption", long_clip, "--out", out, "--quiet").returncode == 0
    assert open(out).readline().strip() == "audio,prompt,text,error"  # no window columns without --windows
    quiet = run("caption", long_clip, "--quiet", cwd=tmp_path)
    lines = quiet.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("WARNING") and "window" in lines[0], quiet.stderr


def test_auto_dtype_and_decoding_workers_follow_the_device(monkeypatch):
    import torch

    from pengi.batch import models
    from pengi.cli import common

    assert common.pick_dtype is models.pick_dtype  # the commands, the engines and the server choose alike
    assert models.pick_dtype("auto", torch.device("cpu")) == torch.float32  # bf16 is no faster on most CPUs
    assert models.pick_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation)
    assert models.pick_dtype("auto", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)  # e.g. a V100
    assert models.pick_dtype("auto", torch.device("cuda")) == torch.float32
    assert models.default_decode_workers(torch.device("cpu")) == 2  # the model needs the cores
    monkeypatch.setattr(models, "available_cores", lambda: 16)
    assert models.default_decode_workers(torch.device("cuda")) == 8
    monkeypatch.setattr(models, "available_cores", lambda: 2)
    assert models.default_decode_workers(torch.device("cuda")) == 2


def test_serve_resolves_auto_dtype_where_the_model_runs(monkeypatch):
    """`pengi serve --dtype auto`: the model process (or thread) chooses for its device, as the batch commands do;
    the server process itself never touches the GPU."""
    import torch

    from pengi.cli import build_parser
    from pengi.cli.serve import settings_from
    from pengi.serving import engine
    from pengi.serving.worker import WorkerSpec

    assert settings_from(build_parser().parse_args(["serve", "--dtype", "auto"])).dtype == "auto"
    loaded = []
    monkeypatch.setattr(engine, "load_engine", lambda path, device, dtype, name=None: loaded.append(dtype))
    WorkerSpec(None, "cpu", "auto").load()
    WorkerSpec(None, "cpu", "bfloat16").load()
    assert loaded == [torch.float32, torch.bfloat16]
