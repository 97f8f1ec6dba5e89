"""What the `pengi` subcommands share: option groups (runtime, model, decoding, batch inputs and outputs), their
checks, device and thread selection, model loading and quiet, readable logs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from typing import Any, TypeVar

import torch

from pengi.batch.inputs import Job, find_jobs
from pengi.errors import PengiInputError

log = logging.getLogger("pengi")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ModelT = TypeVar("ModelT", bound=torch.nn.Module)


# ----------------------------------------------------------------------------- argument types
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def probability(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


# ----------------------------------------------------------------------------- option groups
def runtime_options() -> argparse.ArgumentParser:
    """--device, --dtype, --threads, --quiet."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)")
    p.add_argument("--dtype", default="float32", choices=["auto", *sorted(DTYPES)],
                   help="the model's dtype (default: float32, where batched and one-by-one answers agree); auto: "
                        "bfloat16 on a CUDA GPU that has it (faster, and a trained model's answers rarely "
                        "change: docs/perf.md), float32 elsewhere (bfloat16 is no faster on most CPUs)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for the model (default: the cores this process may use)")
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
    """Inputs, --out, --batch-size, --decode-workers and --shard: how a command reads many files and writes rows."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("inputs", nargs="+", help="audio files, folders (searched recursively), glob patterns or "
                                              ".jsonl/.csv manifests")
    p.add_argument("--out", default="-", help=f"{outputs} file, .jsonl or .csv, rerun to resume; - (the default) "
                                              "writes JSON lines to standard output")
    p.add_argument("--batch-size", type=positive_int, default=8, help="clips per batch (default: 8)")
    p.add_argument("--decode-workers", type=positive_int, default=None,
                   help="threads (or processes) decoding and resampling audio ahead of the model (default: 2 "
                        "when the model runs on the CPU, which needs the cores; up to 8 with a GPU)")
    p.add_argument("--decode-processes", action="store_true",
                   help="decode in worker processes instead of threads: for a GPU that many threads cannot "
                        "feed (they share Python's lock with the thread that drives the GPU)")
    return p


def decode_workers(args: argparse.Namespace, device: torch.device) -> int:
    """``--decode-workers``, else 2 on the CPU (the model needs the cores) and, with a GPU, one per core less
    the one that drives it, at most 8."""
    if args.decode_workers is not None:
        return args.decode_workers
    if device.type == "cpu":
        return 2
    return max(2, min(8, available_cores() - 1))


# ----------------------------------------------------------------------------- devices, threads, models
def pick_device(name: str) -> torch.device:
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as err:
            raise PengiInputError("--device", f"{err}; use auto, cpu, cuda, cuda:N or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise PengiInputError("--device", "CUDA is not available on this machine; use --device cpu or auto")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise PengiInputError("--device", "MPS is not available on this machine; use --device cpu or auto")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """``--dtype``: a named dtype, or for ``auto`` bfloat16 on CUDA devices that support it and float32 elsewhere
    (the measurements behind the choice are in docs/perf.md)."""
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float32


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which containers and job schedulers set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(args: argparse.Namespace) -> None:
    """torch's intra-op threads: ``--threads``, else the cores this process may use (torch would count every core
    of the machine, and oversubscribe a container's or a job scheduler's share of it)."""
    torch.set_num_threads(getattr(args, "threads", None) or available_cores())


def load_model(args: argparse.Namespace, model_class: type[ModelT] | None = None) -> ModelT:
    """``args.model`` (the shipped default model when None and Pengi) on ``args.device`` in ``args.dtype``, in
    eval mode. Only Pengi has a model shipped inside pengi; other classes need ``--model``."""
    from pengi import Pengi

    model_class = model_class or Pengi
    if args.model is None and model_class is not Pengi:
        raise PengiInputError("--model", f"`pengi {args.command}` needs a {model_class.__name__} model folder "
                                         f"(pengi ships none): one written by save_pretrained, e.g. the "
                                         f"final/ folder of pengi_recipes.train_clap")
    if args.model is not None and not os.path.isdir(args.model):
        raise PengiInputError(args.model, "no such model folder" if not os.path.exists(args.model) else
                              "is a file; give the model folder (written by save_pretrained)")
    model = model_class.from_pretrained(args.model)
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    model.to(device=device, dtype=dtype).eval()
    if args.dtype == "auto":
        log.info("dtype: %s (auto, on %s)", str(dtype).removeprefix("torch."), device.type)
    if args.model is None:
        log.info("using the default model shipped with pengi (see the README: what it was trained on)")
    return model


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


def load_contrastive(args: argparse.Namespace):
    """``--model`` as the contrastive model its folder holds (`CLAP` or `SLAP`)."""
    from pengi import CLAP, SLAP

    if args.model is None:
        raise PengiInputError("--model", f"`pengi {args.command}` needs a CLAP or SLAP model folder (pengi ships "
                                         "none): one written by save_pretrained, e.g. the final/ folder of "
                                         "pengi_recipes.train_clap")
    config_file = os.path.join(args.model, "config.json")
    kind = None
    if os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as f:
            kind = json.load(f).get("model_type")
    return load_model(args, SLAP if kind == SLAP.config_class.model_type else CLAP)


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
