"""The batch-job building blocks: result files with one row per input, and decoding ahead of the model."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import signal
import time

import pytest

from pengi.batch import Job, ResultWriter, find_jobs, prefetched
from pengi.batch.generation import GenerationTask
from pengi.batch.local import run_local
from pengi.errors import PengiInputError


def read(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_retried_input_replaces_its_row_in_place(tmp_path, suffix):
    path = str(tmp_path / f"out{suffix}")
    fields = ["audio", "prompt", "text", "error"]
    with ResultWriter(path, fields) as w:
        w.write([{"audio": "a", "prompt": "p", "text": "1"}, {"audio": "b", "prompt": "p", "error": "bad"},
                 {"audio": "c", "prompt": "p", "text": "3"}])
        assert w.done(Job("a", "p")) and not w.done(Job("b", "p")) and not w.done(Job("a", "q"))
    with ResultWriter(path, fields) as w:  # a rerun: b is tried again, and fails again
        w.write([{"audio": "b", "prompt": "p", "error": "still bad"}])
    with ResultWriter(path, fields) as w:
        assert [r["audio"] for r in w.rows] == ["a", "b", "c"] and w.rows[1]["error"] == "still bad"
        w.write([{"audio": "b", "prompt": "p", "text": "2"}, {"audio": "d", "prompt": "p", "text": "4"}])
    with ResultWriter(path, fields) as w:
        assert [(r["audio"], r["text"]) for r in w.rows] == [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]
        assert all(w.done(Job(x, "p")) for x in "abcd")
    assert not os.path.exists(path + ".tmp")


def test_windows_count_as_one_input_and_old_appended_files_are_compacted(tmp_path):
    path = tmp_path / "out.jsonl"
    windows = [{"audio": "long", "prompt": "p", "window": n, "windows": 3, "text": str(n)} for n in range(3)]
    # What an older pengi left: an error row for "x", then its retried row appended after other inputs.
    lines = [{"audio": "x", "prompt": "p", "error": "bad"}, *windows, {"audio": "x", "prompt": "p", "text": "ok"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with ResultWriter(str(path), []) as w:
        assert w.done(Job("long", "p")) and w.done(Job("x", "p"))
    assert read(path) == [lines[-1], *windows] or read(path) == [*windows, lines[-1]]
    assert len(read(path)) == 4


def _writer_that_keeps_rewriting(path: str) -> None:
    with ResultWriter(path, ["audio", "prompt", "text", "error"]) as w:
        w.write([{"audio": f"f{i}", "prompt": "p", "error": "bad"} for i in range(200)])
        n = 0
        while True:  # every write replaces a row: the whole file is rewritten each time
            w.write([{"audio": f"f{n % 200}", "prompt": "p", "text": str(n)}])
            n += 1


def test_kill_9_during_rewrites_never_leaves_a_broken_file(tmp_path):
    path = str(tmp_path / "out.jsonl")
    for _ in range(5):
        proc = multiprocessing.get_context("fork").Process(target=_writer_that_keeps_rewriting, args=(path,))
        proc.start()
        time.sleep(0.4)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        with ResultWriter(path, ["audio", "prompt", "text", "error"]) as w:
            assert sorted(r["audio"] for r in w.rows) == sorted(f"f{i}" for i in range(200))  # one row each


def test_prefetched_keeps_order_and_isolates_bad_items():
    def load(x: int) -> int:
        if x % 7 == 3:
            raise PengiInputError(f"item {x}", "unreadable")
        time.sleep(0.001 * (x % 5))  # out-of-order completion
        return x * 10

    batches = list(prefetched(range(50), 8, load, workers=4))
    assert [len(b) for b in batches] == [8] * 6 + [2]
    flat = [pair for b in batches for pair in b]
    assert [item for item, _ in flat] == list(range(50))
    for item, value in flat:
        assert isinstance(value, PengiInputError) if item % 7 == 3 else value == item * 10


def test_decoding_processes_give_what_threads_give(audio_dir, default_model):
    """`pengi caption --decode-processes`: the caption task's loads run in spawned processes (the processor and the
    task go to each once), come back in input order, and a bad file is an error row, as with threads."""
    (audio_dir / "broken.wav").write_bytes(b"RIFF....WAVEfmt " + bytes(40))
    jobs = find_jobs([str(audio_dir)], "generate audio caption")
    task = GenerationTask(decoding={"num_beams": 1})
    load = functools.partial(task.load, default_model.processor)
    runs = {}
    for processes in (False, True):
        out = str(audio_dir / f"captions-{processes}.jsonl")
        with ResultWriter(out, task.result_fields) as writer:
            report = run_local(jobs, writer, load, lambda batch: task.rows(default_model, batch), output=out,
                               batch_size=2, decode_workers=2, decode_processes=processes, quiet=True)
        assert (report.done, report.failed) == (4, 1)
        runs[processes] = read(out)
    assert runs[True] == runs[False]
    assert [os.path.basename(r["audio"]) for r in runs[True]][:2] == ["broken.wav", "short.ogg"]
    assert "error" in runs[True][0] and all("text" in r for r in runs[True][1:])
