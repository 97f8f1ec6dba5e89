"""Does the training recipe reach the in-memory step's speed? pengi-base trained by `pengi_recipes.train_pengi`
on a folder of real files, against the same step on batches already in memory, in the same run.

    python -m perf.recipe_throughput --device cpu --batch-size 4 --steps 20 --clips 16 --workers 1
    python -m perf.recipe_throughput --device cuda --batch-size 128 --steps 200 --workers 12 --levers baseline all

The files (`perf.audio_files`: wav, flac and ogg at 16 to 48 kHz, mono and stereo, 3 to 10 s) are written
once; each clip has five manifest rows (caption, class, metadata, two questions), so batches mix the task
prompts as a real run's do. The recipe runs in its own process with the shipped pengi/base config, random
weights (no pretrained parts can be downloaded) and the tokenizers from `perf.tokenizer_files`; it logs its
samples/s over the training steps of every ``log.every`` interval, and the figure here is the median of those
after the first ``--skip`` intervals (start-up, compilation). The in-memory figure is `perf.train_throughput`'s
step with the same settings (``--levers``: its configurations; HTSAT's attention is SDPA in both, the
recipe's default) at the same batch size. The data loader settings (``--workers``, ``--prefetch``,
``--persistent``, pinned memory on CUDA) are the recipe's ``data.*`` options.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace

import torch

from pengi.data.manifest import write_manifest
from perf.audio_files import describe_formats, write_clips
from perf.tokenizer_files import add_arguments, clip_bpe_file, gpt2_tokenizer
from perf.train_throughput import BASELINE, LEVERS, build, free, make_batch, measure, training_step
from tests.clip_tokenizer import clip_tokenizer_from_bpe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = re.compile(r"^step (\d+): .*samples/s ([0-9.]+)", re.M)


def write_data(folder: str, clips: int) -> str:
    written = write_clips(os.path.join(folder, "audio"), clips)
    print(f"wrote {len(written)} files: {describe_formats(written)}", flush=True)
    rows = [{"audio": c.path, "task": task, "prompt": prompt, "answer": answer}
            for c in written for task, prompt, answer in c.example.tasks()]
    manifest = os.path.join(folder, "train.jsonl")
    write_manifest(rows, manifest)
    return manifest


def recipe_command(args: argparse.Namespace, folder: str, manifest: str, overrides: list[str]) -> list[str]:
    gpt2_dir, clip_dir = os.path.join(folder, "gpt2"), os.path.join(folder, "clip")
    if not os.path.isdir(gpt2_dir):
        gpt2_tokenizer(args.gpt2_bpe).save_pretrained(gpt2_dir)
        clip_tokenizer_from_bpe(clip_bpe_file(args.clip_bpe)).save_pretrained(clip_dir)
    precision = "bf16" if args.precision == "bfloat16" else "no"
    data = [f"data.train=[{{manifest: {manifest}}}]", "data.validation=null", f"data.batch_size={args.batch_size}",
            f"data.num_workers={args.workers}", f"data.persistent_workers={str(args.persistent).lower()}"]
    if args.prefetch and args.workers:
        data.append(f"data.prefetch_factor={args.prefetch}")
    return [sys.executable, "-m", "pengi_recipes.train_pengi", "--config", "pengi/base", "--set",
            f"output_dir={os.path.join(folder, 'run')}", f"model.tokenizer={gpt2_dir}",
            f"model.prompt_tokenizer={clip_dir}", "model.lm_from=null", "model.prompt_encoder_from=null",
            *data, f"optim.max_steps={args.steps}", "optim.warmup_steps=0", f"log.every={args.log_every}",
            "log.tracker=null", "eval.every=1000000000", "checkpoint.every=1000000000", f"precision={precision}",
            *([f"threads={args.threads}"] if args.threads else []), *overrides]


def run_recipe(cmd: list[str], skip: int, timeout: float) -> tuple[float, list[float]]:
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"the recipe failed:\n{result.stderr[-3000:]}")
    rates = [float(r) for _, r in RATE.findall(result.stdout)]
    if len(rates) <= skip:
        raise SystemExit(f"the recipe logged {len(rates)} rates; run more --steps than {skip} x --log-every")
    return statistics.median(rates[skip:]), rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["bfloat16", "float32"], default=None,
                        help="(default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200, help="recipe steps per configuration")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--skip", type=int, default=3, help="log intervals left out of the median (warm-up)")
    parser.add_argument("--clips", type=int, default=256, help="audio files written (five rows each)")
    parser.add_argument("--workers", type=int, default=8, help="data.num_workers")
    parser.add_argument("--prefetch", type=int, default=None, help="data.prefetch_factor")
    parser.add_argument("--persistent", action="store_true", help="data.persistent_workers")
    parser.add_argument("--levers", nargs="+", default=["baseline"], choices=["baseline", *sorted(LEVERS)])
    parser.add_argument("--memory-steps", type=int, default=10, help="timed in-memory steps")
    parser.add_argument("--folder", default=None, help="where to write the files (default: a temporary folder)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds each recipe run may take")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads of the in-memory step and of the recipe (its `threads`; default: "
                             "torch's, and the recipe's own choice)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.precision = args.precision or ("bfloat16" if device.type == "cuda" else "float32")
    dtype = getattr(torch, args.precision)

    folder = args.folder or tempfile.mkdtemp(prefix="pengi-recipe-perf-")
    manifest = write_data(folder, args.clips)
    print(f"batch {args.batch_size}, {args.precision}, {args.workers} loader workers"
          + (f", prefetch {args.prefetch}" if args.prefetch else "") + (", persistent" if args.persistent else "")
          + f", {os.cpu_count()} CPU cores", flush=True)
    for name in args.levers:
        settings = replace(BASELINE if name == "baseline" else LEVERS[name], attention="sdpa")
        model = build("pengi-base", args, device, settings)
        batch = make_batch(model, args.batch_size, device)
        warmup = 3 if settings.compile else 1
        memory, _ = measure(training_step(model, settings, dtype, device), batch, args.memory_steps, warmup, device)
        del model, batch
        free(device)
        recipe, rates = run_recipe(recipe_command(args, folder, manifest, settings.recipe_overrides()), args.skip,
                                   args.timeout)
        print(f"{name:12s} in memory {memory:8.2f} samples/s   recipe on files {recipe:8.2f} samples/s "
              f"(median of {len(rates) - args.skip} intervals of {args.log_every} steps)   recipe / in memory "
              f"{recipe / memory:.2f}", flush=True)
        print(f"{name:12s} recipe rates per interval: {' '.join(f'{r:.1f}' for r in rates)}", flush=True)


if __name__ == "__main__":
    main()
