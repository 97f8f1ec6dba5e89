"""The benchmarks run (GPU time is scarce: a broken script must fail here first) and check what they compare."""

from __future__ import annotations

import re

import pytest

from perf import caption_files, dtype_agreement, recipe_throughput, train_throughput


def test_training_benchmark_measures_each_lever_against_the_baseline(capsys):
    train_throughput.main(["--device", "cpu", "--shape", "pengi-tiny", "--batch-size", "2", "4", "--steps", "1",
                           "--levers", "sdpa", "fused-adamw", "frozen-bf16", "checkpointing", "--threads", "1"])
    out = capsys.readouterr().out
    rows = re.findall(r"^(\S+) +(\d+) +([0-9.]+) +([0-9.]+)x +([0-9.]+)x", out, re.M)
    assert [(name, int(batch)) for name, batch, *_ in rows] == [
        (name, batch) for name in ("baseline", "sdpa", "fused-adamw", "frozen-bf16", "checkpointing")
        for batch in (2, 4)]
    assert rows[0][3:] == ("1.00", "1.00") and rows[1][3] == "1.00"  # the baseline against itself
    assert "GFLOP per sample per step as counted" in out
    assert "fused-adamw: optim.fused=true" in out and "train.frozen_dtype=bfloat16" in out


def test_caption_benchmark_compares_files_with_memory(capsys, tmp_path):
    caption_files.main(["--device", "cpu", "--model", "default", "--clips", "10", "--batch-size", "4",
                        "--decoders", "threads:2", "--threads", "1", "--folder", str(tmp_path)])
    out = capsys.readouterr().out
    assert "10 files (" in out and "ogg 22050 Hz" in out and "flac 48000 Hz" in out
    assert re.search(r"from files,  2 threads  : +[0-9.]+ clips/s, vs in memory [0-9.]+; model busy", out)
    assert "captions identical: True" in out and "from files with 2 threads: median" in out


def test_dtype_agreement_counts_answers_and_tokens_that_differ(capsys):
    dtype_agreement.main(["--device", "cpu", "--clips", "8", "--tasks", "all", "--alone", "5", "--threads", "1",
                          "--dtypes", "bfloat16"])
    out = capsys.readouterr().out
    assert "8 clips, 40 prompts" in out
    assert re.search(r"float32 +[0-9.]+ answers/s +exact match +[0-9.]+%   batched vs alone: \d of 5 differ", out)
    assert re.search(r"bfloat16 .* differ from float32: \d+ of 40 answers \([0-9.]+%\), \d+ of \d+ tokens", out)


@pytest.mark.slow  # pengi-base on two cores: minutes
def test_recipe_benchmark_runs_the_recipe_on_files(capsys, tmp_path):
    recipe_throughput.main(["--device", "cpu", "--batch-size", "2", "--steps", "4", "--log-every", "1", "--skip",
                            "1", "--clips", "4", "--workers", "1", "--memory-steps", "1", "--folder", str(tmp_path)])
    out = capsys.readouterr().out
    assert re.search(r"baseline +in memory +[0-9.]+ samples/s +recipe on files +[0-9.]+ samples/s", out)
