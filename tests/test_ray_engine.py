"""The Ray engine end to end, as a user runs it: `pengi caption` and `pengi embed` with ``--engine ray`` on real files
of mixed formats and rates, on a real Ray cluster on this machine's CPUs (a head node the test starts with
`ray start`, or a local one the command starts). They write what the local engine writes, resume after the driver
is killed with SIGKILL (every input exactly once), finish when a model worker dies, and leave no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import soundfile as sf
import torch
import torchaudio

from pengi.models.clap.embedding_index import open_index
from pengi.synthetic import example
from tests.ray_cluster import alive, marked, model_workers, ray_env, start_cluster

pytest.importorskip("ray")

RATES = [16000, 22050, 44100, 8000]
FORMATS = ["wav", "flac", "ogg"]


def pengi(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pengi.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def lines(path) -> int:
    return len(open(path, encoding="utf-8").read().splitlines()) if os.path.exists(path) else 0


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """50 files: 48 synthetic clips as WAV, FLAC and Ogg Vorbis at four rates, some stereo, some nested; a corrupt
    file and an empty one."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "nested").mkdir()
    for i in range(48):
        e = example(i)
        rate = RATES[i % len(RATES)]
        audio = torchaudio.functional.resample(torch.from_numpy(e.audio), e.sample_rate, rate).numpy()
        if i % 5 == 0:
            audio = audio[:, None].repeat(2, axis=1)
        target = folder / "nested" if i % 7 == 0 else folder
        sf.write(target / f"clip{i:02d}.{FORMATS[i % len(FORMATS)]}", audio, rate)
    (folder / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt " + bytes(100))
    (folder / "empty.flac").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def cluster():
    head = start_cluster()
    yield head
    left = head.stop()
    assert not left, f"Ray processes still running after the head node stopped: {left}"


@pytest.fixture(scope="module")
def local_captions(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "captions.jsonl"
    result = pengi("caption", corpus, "--out", out, "--batch-size", 1)
    assert result.returncode == 1, result.stderr
    return out.read_text(encoding="utf-8")


def test_caption_on_ray_resumes_after_kill_9_and_finishes_when_a_model_worker_dies(cluster, corpus, local_captions,
                                                                                  tmp_path):
    out = tmp_path / "captions.jsonl"
    cmd = [sys.executable, "-m", "pengi.cli", "caption", str(corpus), "--out", str(out), "--batch-size", "1",
           "--engine", "ray", "--address", cluster.address]

    # The driver is killed with SIGKILL part-way.
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=cluster.env)
        wait_for(lambda: lines(out) >= 4 or first.poll() is not None, 400, "the first rows")
        first.send_signal(signal.SIGKILL)
        first.wait()
    done_before = lines(out)
    assert 4 <= done_before < 40, (done_before, open(tmp_path / "first.log").read()[-3000:])

    # The same command again; its model worker is killed with SIGKILL once it has written two more rows.
    earlier = tuple(model_workers(cluster.process.pid))
    with open(tmp_path / "second.log", "w") as log:
        second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=cluster.env)
        wait_for(lambda: lines(out) >= done_before + 2 or second.poll() is not None, 400, "rows of the rerun")
        workers = model_workers(cluster.process.pid, besides=earlier)
        assert len(workers) == 1 and second.poll() is None, (workers, lines(out))
        os.kill(workers[0], signal.SIGKILL)
        second.wait(timeout=600)
    stderr = open(tmp_path / "second.log").read()
    assert second.returncode == 1, stderr[-3000:]  # the two bad files
    assert f"{done_before} of 50 already in" in stderr
    assert "corrupt.wav: cannot decode" in stderr and "empty.flac:" in stderr
    assert "model workers: 2," in stderr  # the killed one, and the one Ray started in its place
    assert not alive(workers[0])

    # Every input exactly once, and the very file the local engine writes (rows, errors, order).
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 50 and len({r["audio"] for r in rows}) == 50
    assert out.read_text(encoding="utf-8") == local_captions


def test_embed_on_a_local_ray_cluster_equals_the_local_engine_and_leaves_no_process(corpus, clap_dir, tmp_path):
    local, on_ray = tmp_path / "local.safetensors", tmp_path / "ray.safetensors"
    first = pengi("embed", corpus, "--model", clap_dir, "--out", local, "--batch-size", 4)
    env = ray_env()
    second = pengi("embed", corpus, "--model", clap_dir, "--out", on_ray, "--batch-size", 4, "--engine", "ray",
                   "--address", "local", env=env)  # Ray starts a cluster of its own, as on a laptop
    assert first.returncode == second.returncode == 1, second.stderr[-3000:]
    assert "corrupt.wav: cannot decode" in second.stderr and "empty.flac:" in second.stderr
    a, b = open_index(str(local)), open_index(str(on_ray))
    assert len(a) == 48 and a.paths == b.paths and a.model == b.model
    torch.testing.assert_close(b.embeddings, a.embeddings, atol=1e-5, rtol=1e-5)
    wait_for(lambda: not marked(env["PENGI_TEST_MARKER"]), 60, "the local Ray cluster's processes to exit")


@pytest.mark.slow
def test_embed_on_ray_resumes_after_kill_9_and_a_dead_worker(cluster, corpus, clap_dir, tmp_path):
    local = tmp_path / "local.safetensors"
    assert pengi("embed", corpus, "--model", clap_dir, "--out", local, "--batch-size", 1).returncode == 1
    out = tmp_path / "index" / "clips.safetensors"
    cmd = [sys.executable, "-m", "pengi.cli", "embed", str(corpus), "--model", clap_dir, "--out", str(out),
           "--batch-size", "1", "--rows-per-file", "5", "--engine", "ray", "--address", cluster.address]
    saved = lambda: sum(lines(p) for p in (out.parent.glob("clips*.jsonl") if out.parent.exists() else []))  # noqa: E731

    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cluster.env)
    wait_for(lambda: saved() >= 10 or first.poll() is not None, 400, "two full files of the index")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert 10 <= saved() < 45

    earlier, before = tuple(model_workers(cluster.process.pid)), saved()
    with open(tmp_path / "second.log", "w") as log:
        second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=cluster.env)
        wait_for(lambda: saved() > before or second.poll() is not None, 400, "rows of the rerun")
        workers = model_workers(cluster.process.pid, besides=earlier)
        assert len(workers) == 1 and second.poll() is None
        os.kill(workers[0], signal.SIGKILL)
        second.wait(timeout=600)
    assert second.returncode == 1, open(tmp_path / "second.log").read()[-3000:]
    a, b = open_index(str(local)), open_index(str(out))
    assert len(b.files) == 10 and sorted(b.paths) == sorted(a.paths) and len(set(b.paths)) == 48
    mine = dict(zip(b.paths, torch.cat([shard.embeddings for shard in b.shards()])))
    torch.testing.assert_close(torch.stack([mine[p] for p in a.paths]), a.embeddings, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_describe_zero_shot_and_windows_on_ray_equal_the_local_engine(cluster, corpus, clap_dir, tmp_path):
    import pyarrow.parquet as pq

    runs = {"describe": ["describe", corpus, "--batch-size", 4],
            "windows": ["ask", corpus, "is this sound tonal?", "--windows", "--hop", 0.5, "--batch-size", 3],
            "zero-shot": ["zero-shot", corpus, "--model", clap_dir, "--labels", "tone,noise,click", "--top-k", 2]}
    for name, args in runs.items():
        for engine, suffix in (("local", "jsonl"), ("ray", "parquet")):
            extra = ["--engine", "ray", "--address", cluster.address] if engine == "ray" else []
            result = pengi(*args, "--out", tmp_path / f"{name}-{engine}.{suffix}", *extra, env=cluster.env)
            assert result.returncode == 1, result.stderr[-3000:]
        local = [json.loads(line) for line in open(tmp_path / f"{name}-local.jsonl", encoding="utf-8")]
        table = pq.read_table(tmp_path / f"{name}-ray.parquet").to_pylist()
        on_ray = sorted(({k: v for k, v in row.items() if v is not None} for row in table),
                        key=lambda r: (r["audio"], r.get("window", 0)))
        assert on_ray == sorted(local, key=lambda r: (r["audio"], r.get("window", 0))), name
