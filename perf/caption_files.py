"""Captioning from files vs from memory: does `pengi caption` keep the model busy while files are decoded?

    python -m perf.caption_files --device cpu --model default --clips 48 --batch-size 16 --decoders threads:2
    python -m perf.caption_files --device cuda --clips 512 --batch-size 64 --dtype bfloat16 \\
        --decoders threads:2 threads:8 processes:8 processes:15

The clips are real files (`perf.audio_files`: wav, flac and ogg at 16 to 48 kHz, mono and stereo, 3 to 10 s),
so each is decoded, mixed down and resampled on the CPU as users' files are. "From files" runs the engine of
`pengi caption` (`pengi.batch.local.run_local` with the caption task and a result file, decoding ahead in
threads or processes: ``--decoders KIND:N``); "in memory" is the same model on the same clips decoded
beforehand, the same batches (`GenerationTask.rows`), at the same batch size and dtype. The script checks that
both give the same captions, and prints clips/s for each, the ratio, and how long the model waited for audio:
before the first batch (the decoders starting and decoding it) and between batches.

``--model``: a Pengi folder, ``default`` (the small model shipped with pengi), or by default pengi-base's shapes
(without the text encoder, as `perf.caption_throughput`) with random weights.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time

import torch

from pengi import Pengi, PengiProcessor
from pengi.batch.generation import GenerationTask
from pengi.batch.inputs import Job
from pengi.batch.local import run_local
from pengi.batch.prefetch import batched
from pengi.batch.results import ResultWriter
from pengi.presets import pengi_base_no_text_enc
from perf.audio_files import describe_formats, write_clips
from perf.tokenizer_files import add_arguments, gpt2_tokenizer

PROMPT = "generate audio caption"


def load_model(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> Pengi:
    if args.model == "default":
        model = Pengi.from_pretrained()
    elif args.model:
        model = Pengi.from_pretrained(args.model)
    else:
        torch.manual_seed(0)
        config = pengi_base_no_text_enc(max_new_tokens=args.max_new_tokens)
        with torch.device(device):
            model = Pengi(config)
        model.processor = PengiProcessor(config, gpt2_tokenizer(args.gpt2_bpe))
    return model.to(device=device, dtype=dtype).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timed:
    """The model's part of a batch job (``rows``), timed: how long it ran and how long it waited between calls."""

    def __init__(self, rows, device: torch.device):
        self.rows, self.device = rows, device
        self.started = self.last_end = time.perf_counter()
        self.first_wait, self.waits, self.busy = None, 0.0, 0.0

    def __call__(self, loaded):
        begin = time.perf_counter()
        if self.first_wait is None:
            self.first_wait = begin - self.started
        else:
            self.waits += begin - self.last_end
        out = self.rows(loaded)
        sync(self.device)
        self.last_end = time.perf_counter()
        self.busy += self.last_end - begin
        return out


def from_files(model: Pengi, task: GenerationTask, jobs: list[Job], out: str, batch_size: int, kind: str,
               workers: int, device: torch.device) -> tuple[float, Timed, list[dict]]:
    if os.path.exists(out):
        os.remove(out)
    timed = Timed(lambda batch: task.rows(model, batch), device)
    start = timed.started = time.perf_counter()
    with ResultWriter(out, task.result_fields) as writer:
        run_local(jobs, writer, functools.partial(task.load, model.processor), timed, output=out,
                  batch_size=batch_size, decode_workers=workers, decode_processes=kind == "processes", quiet=True)
    elapsed = time.perf_counter() - start
    with ResultWriter(out, task.result_fields) as reader:
        rows = list(reader.rows)
    return elapsed, timed, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--model", default=None, help="a Pengi folder, or default (the shipped model)")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=30, help="(random-weight pengi-base only)")
    parser.add_argument("--decoders", nargs="+", default=["threads:2"],
                        help="decoding set-ups to measure, each KIND:N with KIND threads or processes")
    parser.add_argument("--repeats", type=int, default=1, help="measure everything this many times, interleaved; "
                        "the summary gives medians")
    parser.add_argument("--threads", type=int, default=None, help="torch's intra-op threads (default: torch's)")
    parser.add_argument("--folder", default=None, help="where to write the files (default: a temporary folder)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    decoders = []
    for spec in args.decoders:
        kind, _, n = spec.partition(":")
        if kind not in ("threads", "processes") or not n.isdigit() or int(n) < 1:
            parser.error(f"--decoders {spec!r}: give KIND:N, KIND threads or processes, N at least 1")
        decoders.append((kind, int(n)))

    folder = args.folder or tempfile.mkdtemp(prefix="pengi-caption-perf-")
    clips = write_clips(os.path.join(folder, "audio"), args.clips)
    model = load_model(args, device, dtype)
    proc = model.processor
    task = GenerationTask(decoding={"num_beams": 1})
    jobs = [Job(c.path, PROMPT) for c in clips]
    print(f"torch {torch.__version__}" + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else
                                          f", {torch.get_num_threads()} threads")
          + f", {os.cpu_count()} CPU cores; model {args.model or 'pengi-base shapes, random weights'}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {args.dtype} on {device}")
    print(f"{len(clips)} files ({describe_formats(clips)}), batch size {args.batch_size}, greedy", flush=True)

    start = time.perf_counter()
    loaded = [(job, task.load(proc, job)) for job in jobs]
    decode_s = time.perf_counter() - start
    print(f"decoding alone, in this thread: {len(jobs) / decode_s:8.1f} clips/s ({decode_s:.1f} s)", flush=True)
    task.rows(model, loaded[: args.batch_size])  # warm-up
    out = os.path.join(folder, "captions.jsonl")
    rates: dict[str, list[float]] = {}
    for repeat in range(args.repeats):
        sync(device)
        start = time.perf_counter()
        memory_rows = [row for batch in batched(loaded, args.batch_size) for row in task.rows(model, batch)]
        sync(device)
        memory_rate = len(jobs) / (time.perf_counter() - start)
        rates.setdefault("in memory", []).append(memory_rate)
        print(f"[{repeat + 1}] in memory (model only): {memory_rate:8.1f} clips/s", flush=True)
        expected = {row["audio"]: row["text"] for row in memory_rows}
        for kind, n in decoders:
            elapsed, timed, rows = from_files(model, task, jobs, out, args.batch_size, kind, n, device)
            same = {row["audio"]: row.get("text") for row in rows} == expected
            rate = len(jobs) / elapsed
            rates.setdefault(f"{n} {kind}", []).append(rate / memory_rate)
            print(f"[{repeat + 1}] from files, {n:2d} {kind:9s}: {rate:8.1f} clips/s, vs in memory "
                  f"{rate / memory_rate:.2f}; model busy {timed.busy:.1f} s, waited {timed.first_wait:.1f} s for "
                  f"the first batch and {timed.waits:.1f} s between batches; captions identical: {same}", flush=True)
            if not same:
                raise SystemExit("the captions from files differ from those of the same clips in memory")
    print(f"in memory: median {statistics.median(rates.pop('in memory')):.1f} clips/s over {args.repeats} runs")
    for name, ratios in rates.items():
        print(f"from files with {name}: median {statistics.median(ratios):.2f} of in memory "
              f"(range {min(ratios):.2f} to {max(ratios):.2f})")


if __name__ == "__main__":
    main()
