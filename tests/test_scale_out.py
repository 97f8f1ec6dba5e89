"""Running one job as many parts, without Ray: `--shard I/N` splits the inputs deterministically, `pengi merge` joins
the parts' outputs into what one run writes; Parquet result folders and sharded embedding indexes resume as the
text files do; and the engine options are checked before any work."""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from pengi.batch import Job, ResultWriter
from pengi.batch.embedding import IndexWriter
from pengi.batch.engine import EngineOptions
from pengi.batch.parquet import ParquetResultWriter, part_files
from pengi.batch.ray_engine import WorkerUsage, plan_workers
from pengi.batch.shards import parse_shard, select_shard, shard_name, shard_output
from pengi.cli import main
from pengi.errors import PengiInputError
from pengi.models.clap.embedding_index import EmbeddingIndex, open_index, shards_file
from pengi.synthetic import example
from tests.conftest import tone


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.fixture
def clips(tmp_path, monkeypatch):
    """Seven clips and a corrupt file, named relative to the working directory (so that the shards they fall
    in are the same in every run)."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    for i in range(7):
        e = example(i)
        sf.write((folder / "sub" if i % 3 == 0 else folder) / f"c{i}.{'flac' if i % 2 else 'wav'}", e.audio,
                 e.sample_rate)
    (folder / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt " + bytes(100))
    return folder.relative_to(tmp_path)


def test_input_errors_cross_process_boundaries_whole():
    err = pickle.loads(pickle.dumps(PengiInputError("a.wav", "cannot decode (not audio)")))
    assert (err.source, err.problem) == ("a.wav", "cannot decode (not audio)")
    assert str(err) == "a.wav: cannot decode (not audio)"


def test_shards_split_the_inputs_the_same_way_whatever_their_order():
    jobs = [Job(f"/corpus/{i:03d}.wav", "generate audio caption") for i in range(200)]
    parts = [select_shard(jobs, i, 4) for i in range(4)]
    key = lambda job: job.audio  # noqa: E731
    assert sorted((j for part in parts for j in part), key=key) == jobs  # every input in exactly one part
    assert all(part == sorted(part, key=key) for part in parts) and min(map(len, parts)) > 30
    assert [set(select_shard(jobs[::-1], i, 4)) for i in range(4)] == [set(p) for p in parts]
    assert select_shard(jobs + [Job("/corpus/new.wav", "generate audio caption")], 2, 4)[:len(parts[2])] == parts[2]
    assert parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "-1/8", "a/8", "3", "1/0"):
        with pytest.raises(PengiInputError, match="--shard"):
            parse_shard(bad)
    assert shard_output("out/captions.jsonl", 3, 8) == "out/captions-3-of-8.jsonl"
    assert shard_output("big.parquet/", 0, 2) == "big-0-of-2.parquet" and shard_output("-", 1, 2) == "-"
    assert shard_name("out/captions-3-of-8.jsonl") == ("out/captions.jsonl", 3, 8)
    assert shard_name("out/captions.jsonl") is None


def test_caption_shards_merge_into_what_one_run_writes(clips, tmp_path, caplog):
    whole = tmp_path / "whole.jsonl"
    assert main(["caption", str(clips), "--out", str(whole), "--quiet"]) == 1
    for i in range(3):
        assert main(["caption", str(clips), "--out", str(tmp_path / "part.jsonl"), "--shard", f"{i}/3",
                     "--quiet"]) in (0, 1)
    parts = sorted(str(p) for p in tmp_path.glob("part-*-of-3.jsonl"))
    assert len(parts) == 3 and sum(len(read_jsonl(p)) for p in parts) == 8
    merged = tmp_path / "merged.jsonl"
    assert main(["merge", *parts, "--out", str(merged)]) == 0
    assert merged.read_text() == whole.read_text()  # one row per input, in the order one run writes them
    assert main(["merge", *parts, "--out", str(merged)]) == 2 and "exists" in caplog.text

    # The input named last wins: a later run that read the file which failed replaces its error row.
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text(json.dumps({"audio": str(clips / "corrupt.wav"), "prompt": "generate audio caption",
                                 "text": "a quiet tone"}) + "\n")
    as_csv = tmp_path / "merged.csv"
    caplog.clear()
    assert main(["merge", *parts[:2], str(fixed), "--out", str(as_csv)]) == 0
    assert "merging 2 of the 3 parts" in caplog.text
    rows = list(ResultWriter(str(as_csv), ["audio", "prompt", "text", "error"]).rows)
    assert next(r for r in rows if r["audio"] == str(clips / "corrupt.wav"))["text"] == "a quiet tone"
    assert not any(r["error"] for r in rows) and len({r["audio"] for r in rows}) == len(rows)


def test_parquet_results_resume_and_keep_one_row_per_input(tmp_path):
    out = str(tmp_path / "results.parquet")
    fields = ["audio", "prompt", "text", "error"]
    with ParquetResultWriter(out, fields, rows_per_part=2) as writer:
        writer.write([{"audio": "a.wav", "prompt": "p", "text": "one"}, {"audio": "b.wav", "prompt": "p",
                                                                         "error": "cannot decode"}])
        writer.write([{"audio": "c.wav", "prompt": "p", "text": "three"}])
    assert len(part_files(out)) == 2
    writer = ParquetResultWriter(out, fields)
    assert [writer.done(Job(a, "p")) for a in ("a.wav", "b.wav", "c.wav", "d.wav")] == [True, False, True, False]
    writer.write([{"audio": "b.wav", "prompt": "p", "text": "two"}])  # the retry replaces the error row
    writer.close()
    table = pq.read_table(out).to_pylist()
    assert sorted((r["audio"], r["text"], r["error"]) for r in table) == [
        ("a.wav", "one", None), ("b.wav", "two", None), ("c.wav", "three", None)]

    # Killed after writing a retry's new part but before removing the old row: the newer one is kept.
    pq.write_table(pa.Table.from_pylist([{"audio": "a.wav", "prompt": "p", "text": "newer", "error": None}]),
                   os.path.join(out, "part-000099.parquet"))
    (tmp_path / "results.parquet" / "part-000100.parquet.tmp").write_bytes(b"half a part")
    writer = ParquetResultWriter(out, fields)
    writer.close()
    table = pq.read_table(out).to_pylist()
    assert sorted((r["audio"], r["text"]) for r in table) == [("a.wav", "newer"), ("b.wav", "two"),
                                                               ("c.wav", "three")]
    assert not any(name.endswith(".tmp") for name in os.listdir(out))
    with pytest.raises(ValueError, match="not this command's"):
        ParquetResultWriter(out, ["audio", "prompt", "label", "error"])


def test_caption_to_parquet_writes_the_jsonl_rows_and_resumes(clips, tmp_path, caplog):
    assert main(["caption", str(clips), "--out", str(tmp_path / "c.jsonl"), "--quiet"]) == 1
    out = tmp_path / "c.parquet"
    assert main(["caption", str(clips), "--out", str(out), "--quiet"]) == 1
    rows = [{k: v for k, v in r.items() if v is not None} for r in pq.read_table(out).to_pylist()]
    assert rows == read_jsonl(tmp_path / "c.jsonl")
    caplog.clear()
    caplog.set_level(logging.INFO, logger="pengi")
    assert main(["caption", str(clips), "--out", str(out)]) == 1
    assert "7 of 8 already in" in caplog.text and pq.read_table(out).num_rows == 8


def test_a_large_index_is_sharded_searched_whole_and_merged(clap_dir, clips, tmp_path, capsys):
    out = tmp_path / "index" / "clips.safetensors"
    assert main(["embed", str(clips), "--model", clap_dir, "--out", str(out), "--rows-per-file", "3",
                 "--batch-size", "2", "--quiet"]) == 1
    one = tmp_path / "one.safetensors"
    assert main(["embed", str(clips), "--model", clap_dir, "--out", str(one), "--quiet"]) == 1
    sharded, whole = open_index(str(out)), EmbeddingIndex.load(str(one))
    assert [os.path.basename(f) for f in sharded.files] == ["clips.safetensors", "clips.00002.safetensors",
                                                            "clips.00003.safetensors"]
    assert sharded.paths == whole.paths and os.path.isfile(shards_file(str(out)))
    torch.testing.assert_close(torch.cat([s.embeddings for s in sharded.shards()]), whole.embeddings)
    queries = torch.nn.functional.normalize(torch.randn(3, whole.embeddings.shape[1]), dim=-1)
    found, expected = sharded.search(queries, 4), whole.search(queries, 4)
    assert [[m["audio"] for m in q] for q in found] == [[m["audio"] for m in q] for q in expected]
    assert [m["score"] for q in found for m in q] == pytest.approx([m["score"] for q in expected for m in q],
                                                                   abs=1e-4)

    # A rerun adds only new files, to the last shard; a shard saved but not yet listed is made again.
    sf.write(clips / "new.wav", tone(700, 1.0, 16000), 16000)
    listing = json.loads(open(shards_file(str(out))).read())
    listing["files"] = listing["files"][:2]
    open(shards_file(str(out)), "w").write(json.dumps(listing))
    writer = IndexWriter(str(out), os.path.abspath(clap_dir), rows_per_file=3)
    assert len(writer) == 6 and not writer.done(Job(str(clips / "new.wav"), ""))
    writer.close()
    assert main(["embed", str(clips), "--model", clap_dir, "--out", str(out), "--rows-per-file", "3",
                 "--quiet"]) == 1
    assert len(open_index(str(out))) == 8 and len(open_index(str(out)).files) == 3

    capsys.readouterr()
    assert main(["retrieve", "a low hum", "--model", clap_dir, "--index", str(out), "--top-k", "8"]) == 0
    assert len(json.loads(capsys.readouterr().out)["matches"]) == 8

    # Indexes of --shard runs merge into the unsharded index.
    for i in range(2):
        main(["embed", str(clips), "--model", clap_dir, "--out", str(tmp_path / "p.safetensors"), "--shard",
              f"{i}/2", "--quiet"])
    merged = tmp_path / "merged.safetensors"
    assert main(["merge", str(tmp_path / "p-0-of-2.safetensors"), str(tmp_path / "p-1-of-2.safetensors"),
                 "--out", str(merged)]) == 0
    full = tmp_path / "full.safetensors"
    main(["embed", str(clips), "--model", clap_dir, "--out", str(full), "--quiet"])
    a, b = EmbeddingIndex.load(str(full)), EmbeddingIndex.load(str(merged))
    assert b.paths == a.paths
    torch.testing.assert_close(b.embeddings, a.embeddings)


def test_engine_options_are_checked_before_any_work(clips, tmp_path, caplog, monkeypatch):
    out = str(tmp_path / "x.jsonl")
    assert main(["caption", str(clips), "--out", out, "--workers", "2"]) == 2
    assert "--workers: is an option of the Ray engine: add --engine ray" in caplog.text
    assert main(["caption", str(clips), "--out", out, "--shard", "3/3"]) == 2 and "0 <= I < N" in caplog.text
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["caption", str(clips), "--out", out, "--engine", "ray"]) == 2
    assert 'pip install "pengi[ray]"' in caplog.text and not os.path.exists(out)
    with pytest.raises(PengiInputError, match="--engine"):
        EngineOptions(engine="spark")
    # --decode-processes is the local engine's: Ray's decoding tasks are processes already.
    assert main(["caption", str(clips), "--out", out, "--engine", "ray", "--decode-processes"]) == 2
    assert "--decode-processes: is an option of the local engine" in caplog.text and not os.path.exists(out)


def test_decoding_options_flow_through_the_engine_options(clips, tmp_path, monkeypatch):
    """`engine_options(args)` carries --decode-workers and --decode-processes to the local engine; left out, the
    workers are chosen for the device the model was opened on (2 on the CPU)."""
    from pengi.batch import engine

    seen = []

    def spy(*args, **kwargs):
        seen.append((kwargs["decode_workers"], kwargs["decode_processes"]))
        return real(*args, **kwargs)

    real = engine.run_local
    monkeypatch.setattr(engine, "run_local", spy)
    out = str(tmp_path / "x.jsonl")
    # Exit 1 both times: the corrupt file is an error row, from a decoding thread as from a decoding process.
    assert main(["caption", str(clips), "--out", out, "--quiet", "--dtype", "auto"]) == 1
    assert main(["caption", str(clips), "--out", str(tmp_path / "y.jsonl"), "--quiet", "--decode-workers", "3",
                 "--decode-processes"]) == 1
    assert seen == [(2, False), (3, True)]
    assert open(out).read() == open(tmp_path / "y.jsonl").read()  # auto is float32 on the CPU
    assert sum("cannot decode audio" in line for line in open(out)) == 1


def test_ray_workers_are_planned_from_the_cluster_and_checked(caplog):
    def plan(resources, named=False, **given):
        return plan_workers(resources, EngineOptions(engine="ray", **given), named)

    assert plan({"CPU": 16.0, "GPU": 1.0}) == (1, 1.0, 1.0)  # one worker per GPU
    assert plan({"CPU": 16.0, "GPU": 4.0}, gpus_per_worker=0.5) == (8, 0.5, 1.0)
    assert plan({"CPU": 16.0}) == (8, 0.0, 1.0) and plan({"CPU": 2.0}) == (1, 0.0, 1.0)
    assert plan({"CPU": 16.0}, cpus_per_worker=4, workers=3) == (3, 0.0, 4.0)
    with pytest.raises(PengiInputError, match="the Ray cluster has 0"):
        plan({"CPU": 2.0}, gpus_per_worker=1)
    with pytest.raises(PengiInputError, match="leave no CPU for decoding"):
        plan({"CPU": 2.0}, workers=2)  # the decoding tasks would never be scheduled
    assert plan({"CPU": 2.0}, named=True, gpus_per_worker=1) == (1, 1.0, 1.0)  # an autoscaler may add GPUs
    assert "the run waits for nodes that have them" in caplog.text
    assert plan({"CPU": 1.0}) == (1, 0.0, 0.5)  # one core: the model worker takes half of it


def test_busy_fraction_counts_each_worker_from_when_it_was_ready():
    usage = WorkerUsage()
    usage.add("a", ready_at=0.0, started_at=1.0, busy_s=2.0)  # waited 1 s for its first batch
    usage.add("a", ready_at=0.0, started_at=3.0, busy_s=2.0)
    usage.add("b", ready_at=10.0, started_at=10.0, busy_s=5.0)  # a restarted worker, busy from the start
    assert usage.busy_fraction == pytest.approx(9.0 / 10.0)
    assert WorkerUsage().busy_fraction is None


def test_result_files_are_put_back_in_input_order(tmp_path):
    path = str(tmp_path / "r.jsonl")
    with ResultWriter(path, ["audio", "prompt", "text", "error"]) as writer:
        writer.write([{"audio": a, "prompt": "", "text": a} for a in ("old", "c", "a", "b")])
        writer.reorder([("a", ""), ("b", ""), ("c", "")])
    assert [r["audio"] for r in read_jsonl(path)] == ["old", "a", "b", "c"]  # inputs it does not name stay first
    before = os.stat(path).st_ino
    with ResultWriter(path, ["audio", "prompt", "text", "error"]) as writer:
        writer.reorder([("a", ""), ("b", ""), ("c", "")])
    assert os.stat(path).st_ino == before  # already in order: not rewritten
