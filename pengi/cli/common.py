"""What the `pengi` subcommands share: option groups (runtime, model, decoding, batch inputs and outputs), their
checks, device and thread selection, model loading and quiet, readable logs."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from typing import Any

import torch

from pengi.batch.engine import ENGINES, EngineOptions
from pengi.batch.inputs import Job, find_jobs
from pengi.batch.models import DTYPE_CHOICES, DTYPES, ModelSource, available_cores, pick_device, pick_dtype
from pengi.batch.shards import parse_shard, select_shard, shard_output
from pengi.errors import PengiInputError

log = logging.getLogger("pengi")
# Re-exported: the recipes pick devices as the commands do; `pengi serve` counts cores as they do.
__all__ = ["DTYPES", "available_cores", "pick_device", "pick_dtype"]


# ----------------------------------------------------------------------------- argument types
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def positive_float(text: str) -> float:
    value = number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def probability(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


# ----------------------------------------------------------------------------- option groups
def runtime_options(threads_default: str = "the cores this process may use",
                    threads_aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """--device, --dtype, --threads, --quiet. ``threads_default`` says what --threads is when not given (a command
    that chooses otherwise than `set_threads` says how); ``threads_aliases`` are other names it keeps answering to."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)")
    p.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES,
                   help="the model's dtype (default: float32, where batched and one-by-one answers agree); auto: "
                        "bfloat16 on a CUDA GPU that has it (faster, and a trained model's answers rarely "
                        "change: docs/perf.md), float32 elsewhere (bfloat16 is no faster on most CPUs)")
    p.add_argument("--threads", *threads_aliases, dest="threads", type=positive_int, default=None,
                   help=f"CPU threads for the model (default: {threads_default})")
    p.add_argument("--quiet", action="store_true", help="no progress bar or info logs; warnings and errors only")
    return p


def model_option(kind: str = "Pengi") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    default = "the model shipped with pengi" if kind == "Pengi" else "required: pengi ships no " + kind + " model"
    p.add_argument("--model", default=None, help=f"{kind} model folder written by save_pretrained ({default})")
    return p


def decoding_options() -> argparse.ArgumentParser:
    """The decoding options of `Pengi.generate`, each checked when parsed."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("decoding")
    g.add_argument("--num-beams", type=positive_int, default=None, help="beam width (default: the model's)")
    g.add_argument("--max-new-tokens", type=positive_int, default=None, help="(default: the model's)")
    g.add_argument("--do-sample", action="store_true", help="sample instead of searching (greedy or beam)")
    g.add_argument("--temperature", type=positive_float, default=None, help="sampling temperature (--do-sample)")
    g.add_argument("--top-p", type=probability, default=None, help="nucleus sampling mass in (0, 1] (--do-sample)")
    g.add_argument("--top-k", type=positive_int, default=None, help="sample among the k likeliest (--do-sample)")
    g.add_argument("--seed", type=int, default=None,
                   help="with --do-sample: each clip's answer depends only on this seed and the clip")
    return p


def decoding_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The decoding options given, as `generate` keyword arguments; sampling options need --do-sample."""
    sampling = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k}
    given = [name for name, value in sampling.items() if value is not None]
    if given and not args.do_sample:
        raise PengiInputError("--" + given[0].replace("_", "-"), "is a sampling option: add --do-sample")
    if args.do_sample and args.num_beams not in (None, 1):
        raise PengiInputError("--num-beams", "sampling (--do-sample) draws one sequence: leave --num-beams out")
    if args.seed is not None and not args.do_sample:
        raise PengiInputError("--seed", "only sampling is random: add --do-sample (search is deterministic)")
    options: dict[str, Any] = {"num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens, **sampling}
    if args.do_sample:
        options.update(do_sample=True, num_beams=1)
    return {k: v for k, v in options.items() if v is not None}


def batch_options(outputs: str = "results") -> argparse.ArgumentParser:
    """Inputs, --out, --batch-size, --decode-workers, --shard and the engine: how a command reads many files,
    where it runs and where its rows go."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("inputs", nargs="+", help="audio files, folders (searched recursively), glob patterns or "
                                              ".jsonl/.csv manifests")
    p.add_argument("--out", default="-", help=f"{outputs} file, .jsonl or .csv, or a DIR.parquet folder; rerun to "
                                              "resume; - (the default) writes JSON lines to standard output")
    p.add_argument("--batch-size", type=positive_int, default=8, help="clips per batch (default: 8)")
    p.add_argument("--decode-workers", type=positive_int, default=None,
                   help="threads (or processes) decoding and resampling audio ahead of the model (default: 2 "
                        "when the model runs on the CPU, which needs the cores; up to 8 with a GPU; local "
                        "engine: Ray decodes in one task per CPU of the cluster)")
    p.add_argument("--decode-processes", action="store_true",
                   help="decode in worker processes instead of threads: for a GPU that many threads cannot "
                        "feed (they share Python's lock with the thread that drives the GPU); local engine "
                        "only: refused with --engine ray, whose decoding tasks are processes already")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="only part I of N (counted from 0) of the inputs, chosen by a hash of each input, written "
                        "to NAME-I-of-N.EXT; `pengi merge` joins the parts (for SLURM job arrays and the like)")
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: this process (default); ray: a Ray cluster, or a local one Ray starts "
                        '(pip install "pengi[ray]")')
    g.add_argument("--address", default=None,
                   help="the Ray cluster to join (default: RAY_ADDRESS, else a cluster `ray start` started on this "
                        "machine, else a new local one; local: always a new local one)")
    g.add_argument("--workers", type=positive_int, default=None,
                   help="model workers (Ray actors; default: one per GPU, else one per two CPUs)")
    g.add_argument("--gpus-per-worker", type=non_negative_float, default=None,
                   help="GPUs per model worker (default: 1 if the cluster has GPUs, else 0)")
    g.add_argument("--cpus-per-worker", type=positive_float, default=None,
                   help="CPUs per model worker, also its torch threads (default: 1)")
    return p


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """The engine options given, checked (Ray's options need --engine ray)."""
    return EngineOptions(engine=args.engine, output=args.out, batch_size=args.batch_size,
                         decode_workers=args.decode_workers, decode_processes=args.decode_processes,
                         quiet=args.quiet, address=args.address,
                         workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                         cpus_per_worker=args.cpus_per_worker, threads=args.threads)


# ----------------------------------------------------------------------------- devices, threads, models
def set_threads(args: argparse.Namespace) -> None:
    """torch's intra-op threads: ``--threads``, else the cores this process may use (torch would count every core
    of the machine, and oversubscribe a container's or a job scheduler's share of it)."""
    torch.set_num_threads(getattr(args, "threads", None) or available_cores())


def model_source(args: argparse.Namespace, family: str = "pengi") -> ModelSource:
    """Where ``--model`` points (the shipped default for Pengi), checked: only Pengi has a model shipped inside
    pengi; CLAP and SLAP commands need ``--model``."""
    if args.model is None and family != "pengi":
        raise PengiInputError("--model", f"`pengi {args.command}` needs a CLAP or SLAP model folder (pengi ships "
                                         "none): one written by save_pretrained, e.g. the final/ folder of "
                                         "pengi_recipes.train_clap")
    source = ModelSource(family, os.path.abspath(args.model) if args.model else None, args.device, args.dtype)
    source.check()
    if args.model is None:
        log.info("using the default model shipped with pengi (see the README: what it was trained on)")
    return source


def load_model(args: argparse.Namespace) -> torch.nn.Module:
    """``--model`` (the shipped default model when not given) on ``--device`` in ``--dtype``, in eval mode."""
    return model_source(args).open()


def model_name(args: argparse.Namespace) -> str:
    return os.path.abspath(args.model) if args.model else "default"


# ----------------------------------------------------------------------------- logs
def setup_logging(quiet: bool) -> None:
    """Our logs as ``LEVEL message`` on stderr; third-party chatter (transformers' loading bars and notices)
    off; Python warnings as one line each, without the source line they came from."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(message)s",
                        stream=sys.stderr)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("datasets").setLevel(logging.ERROR)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

    def show(message, category, filename, lineno, file=None, line=None):
        log.warning("%s", message)

    warnings.showwarning = show


def load_contrastive(args: argparse.Namespace) -> torch.nn.Module:
    """``--model`` as the contrastive model its folder holds (`CLAP` or `SLAP`)."""
    return model_source(args, "contrastive").open()


# ----------------------------------------------------------------------------- inputs
def unique_jobs(inputs: list[str], prompt: str = "") -> list[Job]:
    """The jobs of ``inputs`` (a file named twice is done once); none found is an error."""
    jobs = list(dict.fromkeys(find_jobs(inputs, prompt)))
    if not jobs:
        raise PengiInputError(" ".join(inputs), "no audio files found")
    return jobs


def read_lines(path: str) -> list[str]:
    """The non-blank lines of a text file (labels, or texts to search), stripped."""
    if not os.path.isfile(path):
        raise PengiInputError(path, "file not found")
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    if not lines:
        raise PengiInputError(path, "has no non-blank lines")
    return lines


def select_jobs(args: argparse.Namespace, prompt: str = "") -> list[Job]:
    """The jobs of ``args.inputs``; with ``--shard I/N`` only part I's, and ``args.out`` renamed for the part."""
    jobs = unique_jobs(args.inputs, prompt)
    if args.shard is None:
        return jobs
    index, count = parse_shard(args.shard)
    part = select_shard(jobs, index, count)
    args.out = shard_output(args.out, index, count)
    where = "" if args.out == "-" else f", into {args.out}"
    log.info("shard %d of %d: %d of the %d inputs%s", index, count, len(part), len(jobs), where)
    return part
