"""Batch captioning on the Ray engine against the local engine: the same folder, model and batches, in one run.

    python -m perf.ray_throughput --clips 300                                   # CPU: what Ray costs
    python -m perf.ray_throughput --clips 2000 --seconds 10 --shapes pengi-base --batch-size 32 \
        --gpus-per-worker 1 --workers 1                                         # one GPU: is it kept busy?

Writes ``--clips`` synthetic clips (WAV and FLAC at 16, 22.05, 44.1 and 48 kHz, so that most are resampled) to a
folder (or reads ``--folder``), captions them with the local engine and then with the Ray engine (a local Ray
cluster the engine starts, or ``--address``), checks that both wrote the same file, and prints for each engine:
clips/s over the whole run (model loading and, for Ray, starting the cluster included), clips/s after the first
batch (the steady state), and the fraction of the time the model was working rather than waiting for decoded
audio (the local engine's model thread; Ray's model actors, from when each was ready). ``--shapes pengi-base``
runs a randomly initialised model of pengi-base's shapes (HTSAT, GPT-2 base; no weights can be downloaded here),
saved to a folder that the Ray actors load; the default is the small model shipped with pengi.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import soundfile as sf
import torch

from pengi import Pengi, PengiProcessor
from pengi.batch.engine import BatchWork, EngineOptions, run_batch
from pengi.batch.generation import GenerationTask
from pengi.batch.inputs import find_jobs
from pengi.batch.models import ModelSource
from pengi.batch.results import ResultWriter
from pengi.presets import pengi_base_no_text_enc
from pengi.synthetic import example
from perf.tokenizer_files import add_arguments, gpt2_tokenizer

RATES = (16000, 22050, 44100, 48000)
PROMPT = "generate audio caption"


class TimedWriter:
    """A writer that notes when each batch's rows arrived."""

    def __init__(self, inner: ResultWriter):
        self.inner, self.times = inner, []

    def done(self, job) -> bool:
        return self.inner.done(job)

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.inner.write(rows)
        self.times.append((time.perf_counter(), len({r["audio"] for r in rows})))

    def reorder(self, keys) -> None:
        self.inner.reorder(keys)

    def __enter__(self) -> TimedWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.inner.close()


def make_clips(folder: str, n: int, seconds: float) -> None:
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        rate = RATES[i % len(RATES)]
        e = example(i, sample_rate=rate, seconds=seconds * (0.5 + (i % 7) / 6))
        sf.write(os.path.join(folder, f"clip{i:05d}.{'flac' if i % 2 else 'wav'}"), e.audio, rate)


def model_folder(args: argparse.Namespace, scratch: str) -> str | None:
    if args.model or args.shapes == "starter":
        return args.model
    torch.manual_seed(0)
    config = pengi_base_no_text_enc(max_new_tokens=args.max_new_tokens)
    model = Pengi(config)
    model.processor = PengiProcessor(config, gpt2_tokenizer(args.gpt2_bpe))
    folder = os.path.join(scratch, "pengi-base-random")
    model.save_pretrained(folder)
    return folder


def run(engine: str, args: argparse.Namespace, source: ModelSource, jobs, out: str) -> dict[str, float]:
    task = GenerationTask(decoding={"num_beams": 1, "max_new_tokens": args.max_new_tokens})
    options = EngineOptions(engine=engine, output=out, batch_size=args.batch_size, decode_workers=args.decode_workers,
                            quiet=True, threads=args.threads if engine == "ray" else None,
                            **({"address": args.address, "workers": args.workers,
                                "gpus_per_worker": args.gpus_per_worker,
                                "cpus_per_worker": args.cpus_per_worker} if engine == "ray" else {}))
    writer = TimedWriter(ResultWriter(out, task.result_fields))
    start = time.perf_counter()
    report = run_batch(BatchWork(source, task.load, task.rows), jobs, lambda: writer, options)
    total = time.perf_counter() - start
    (first, n_first), last = writer.times[0], writer.times[-1][0]
    return {"total_s": total, "clips_per_s": len(jobs) / total, "first_row_s": first - start,
            "steady_clips_per_s": (len(jobs) - n_first) / max(last - first, 1e-9), "busy": report.model_busy or 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=4.0, help="mean clip length (0.5x to 1.5x of it)")
    parser.add_argument("--folder", help="caption this folder instead of writing clips")
    parser.add_argument("--model", help="a Pengi model folder (default: --shapes)")
    parser.add_argument("--shapes", choices=["starter", "pengi-base"], default="starter",
                        help="starter: the model shipped with pengi; pengi-base: random weights of that size")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=30)
    parser.add_argument("--decode-workers", type=int, default=2, help="the local engine's decoding threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--address", default=None, help="a Ray cluster (default: a local one)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--gpus-per-worker", type=float, default=None)
    parser.add_argument("--cpus-per-worker", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of each Ray model actor (default: its CPUs); the local engine uses all "
                             "cores")
    add_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or os.path.join(scratch, "clips")
        if not args.folder:
            make_clips(folder, args.clips, args.seconds)
        jobs = find_jobs([folder], PROMPT)
        source = ModelSource("pengi", model_folder(args, scratch), args.device, args.dtype)
        results = {engine: run(engine, args, source, jobs, os.path.join(scratch, f"{engine}.jsonl"))
                   for engine in ("local", "ray")}
        same = open(os.path.join(scratch, "local.jsonl")).read() == open(os.path.join(scratch, "ray.jsonl")).read()

    print(f"torch {torch.__version__}, {len(os.sched_getaffinity(0))} CPU cores"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"))
    print(f"{len(jobs)} clips, model {args.model or args.shapes}, batch size {args.batch_size}, greedy, at most "
          f"{args.max_new_tokens} new tokens, {args.dtype}")
    for engine, r in results.items():
        print(f"{engine:>5}: {r['clips_per_s']:7.2f} clips/s over {r['total_s']:6.1f} s (first rows after "
              f"{r['first_row_s']:5.1f} s), {r['steady_clips_per_s']:7.2f} clips/s after the first batch; "
              f"model busy {100 * r['busy']:.0f}% (waiting for audio {100 * (1 - r['busy']):.0f}%)")
    local, ray = results["local"], results["ray"]
    print(f"Ray / local time: whole run {ray['total_s'] / local['total_s']:.2f}x, steady state "
          f"{local['steady_clips_per_s'] / ray['steady_clips_per_s']:.2f}x   same rows: {same}")
    if not same:
        raise SystemExit("the engines wrote different rows")


if __name__ == "__main__":
    main()
