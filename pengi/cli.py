"""The `pengi` command: caption folders, ask questions about a clip, describe clips, evaluate on benchmarks.

The CLAP commands (zero-shot, embed, retrieve) are in `pengi.cli_clap`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, TypeVar

import torch
import yaml
from tqdm.auto import tqdm

from .batch_io import Job, ResultWriter, find_jobs, prefetched
from .convert_clap import add_convert_parsers
from .convert_pengi import add_convert_parser
from .data.adapters import ADAPTERS
from .data.manifest import write_manifest
from .errors import PengiInputError
from .modeling_pengi import DEFAULT_PROMPT, Pengi
from .serving import cli as serving_cli

log = logging.getLogger("pengi")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ModelT = TypeVar("ModelT", bound=torch.nn.Module)


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


def load_model(args: argparse.Namespace, model_class: type[ModelT] = Pengi) -> ModelT:
    """``args.model`` as a ``model_class`` on ``args.device`` in ``args.dtype``, in eval mode. Only Pengi has a
    model shipped inside pengi; other classes need ``--model``."""
    if args.model is None and model_class is not Pengi:
        raise PengiInputError("--model", f"`pengi {args.command}` needs a {model_class.__name__} model folder "
                                         f"(pengi ships none): one written by save_pretrained, e.g. the "
                                         f"final/ folder of recipes/train_clap.py")
    try:
        model = model_class.from_pretrained(args.model)
    except OSError:
        if args.model is not None and not os.path.exists(args.model):
            raise OSError(f"{args.model}: no such model folder (nor a hub model of that name in the local cache)"
                          ) from None
        raise
    model.to(device=pick_device(args.device), dtype=DTYPES[args.dtype]).eval()
    if args.model is None:
        log.info("using the default model shipped with pengi (see README: what it was trained on)")
    return model


def decoding_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.num_beams is not None:
        options["num_beams"] = args.num_beams
    if args.max_new_tokens is not None:
        options["max_new_tokens"] = args.max_new_tokens
    return options


def cmd_caption(args: argparse.Namespace) -> int:
    jobs = find_jobs(args.inputs, args.prompt)
    if not jobs:
        log.error("no audio files found in %s", " ".join(args.inputs))
        return 2
    model = load_model(args)
    proc = model.processor
    failed = 0
    with ResultWriter(args.out) as writer:
        todo = [j for j in jobs if not writer.done(j)]
        if len(todo) < len(jobs):
            log.info("%d of %d already in %s; skipping them", len(jobs) - len(todo), len(jobs), args.out)

        def load(batch: list[Job]) -> list[tuple[Job, Any]]:
            loaded = []
            for job in batch:
                try:
                    proc.check_prompts([job.prompt], names=[f"prompt of {job.audio}"])
                    wave = proc.load(job.audio)
                    loaded.append((job, proc.windows(wave, args.hop) if args.windows else proc.clip(wave)))
                except PengiInputError as err:
                    loaded.append((job, err))
            return loaded

        bar = tqdm(total=len(todo), unit="clip", desc="captioning", disable=args.quiet)
        for loaded in prefetched(todo, args.batch_size, load):
            rows, bad = caption_batch(model, loaded, args)
            writer.write(rows)
            failed += bad
            bar.update(len(loaded))
        bar.close()
    done = len(todo) - failed
    log.info("captioned %d file(s), %d failed; results in %s", done, failed, args.out)
    return 1 if failed else 0


def caption_batch(model: Pengi, loaded: list[tuple[Job, Any]], args: argparse.Namespace) -> tuple[list[dict], int]:
    """Generate for the good inputs of a batch; bad ones become error rows. Rows keep the input order."""
    waves, prompts = [], []
    for job, item in loaded:
        if not isinstance(item, PengiInputError):
            clips = [w.wave for w in item] if args.windows else [item]
            waves += clips
            prompts += [job.prompt] * len(clips)
    texts = iter(model.generate_from_waveforms(waves, prompts, batch_size=args.batch_size,
                                               generate_kwargs=decoding_options(args)) if waves else [])
    rows: list[dict[str, Any]] = []
    errors = 0
    for job, item in loaded:
        row: dict[str, Any] = {"audio": job.audio, "prompt": job.prompt}
        if isinstance(item, PengiInputError):
            tqdm.write(f"error: {item}", file=sys.stderr)
            rows.append({**row, "error": item.problem})
            errors += 1
        elif args.windows:
            rows += [{**row, "start": round(w.start, 3), "end": round(w.end, 3), "window": n, "windows": len(item),
                      "text": next(texts)} for n, w in enumerate(item)]
        else:
            rows.append({**row, "text": next(texts)})
    return rows, errors


def load_readable(model: Pengi, paths: list[str]) -> tuple[list[str], list[Any]]:
    """Decode each file; report the bad ones on stderr and keep the rest (as waveforms at the model's rate)."""
    good, waves = [], []
    for path in paths:
        try:
            waves.append((model.processor.load(path), model.config.sample_rate))
            good.append(path)
        except PengiInputError as err:
            log.error("%s", err)
    return good, waves


def cmd_ask(args: argparse.Namespace) -> int:
    model = load_model(args)
    model.processor.check_prompts([args.question], names=["question"])
    paths, waves = load_readable(model, args.audio)
    answers = model.generate(waves, args.question, **decoding_options(args)) if waves else []
    for path, answer in zip(paths, answers):
        print(f"{path}\t{answer}" if len(args.audio) > 1 else answer)
    return 0 if len(paths) == len(args.audio) else 1


def cmd_describe(args: argparse.Namespace) -> int:
    model = load_model(args)
    paths, waves = load_readable(model, args.audio)
    results = model.describe(waves, **decoding_options(args)) if waves else []
    for path, result in zip(paths, results):
        print(json.dumps({"audio": path, **result}, ensure_ascii=False))
    return 0 if len(paths) == len(args.audio) else 1


def cmd_manifest(args: argparse.Namespace) -> int:
    kwargs = {}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep:
            log.error("options are KEY=VALUE, got %r", item)
            return 2
        kwargs[key] = yaml.safe_load(value)
    try:
        n = write_manifest(ADAPTERS[args.corpus](**kwargs), args.out)
    except TypeError as err:
        log.error("%s: %s (see `pengi manifest --help` for each corpus' options)", args.corpus, err)
        return 2
    log.info("wrote %d rows to %s", n, args.out)
    return 0 if n else 1


def cmd_eval(args: argparse.Namespace) -> int:
    from .benchmark import load_benchmark
    from .evaluation import run_benchmark, select_datasets  # evaluate and matplotlib load only for this command

    bench = load_benchmark(args.benchmark, args.data_root)
    overrides = {"batch_size": args.batch_size, "num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens,
                 "limit": args.limit}
    select_datasets(bench, args.only, overrides)  # a typo or a missing manifest fails before the model loads
    model = load_model(args)
    results = run_benchmark(model, bench, args.out, model_name=args.model or "default", overrides=overrides,
                            only=args.only, overwrite=args.overwrite, quiet=args.quiet)
    if not args.quiet:
        print(open(f"{args.out}/results.md", encoding="utf-8").read())
    failed = sum(entry["num_failed"] for entry in results["datasets"].values())
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    runtime = argparse.ArgumentParser(add_help=False)
    runtime.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)")
    runtime.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    runtime.add_argument("--quiet", action="store_true", help="no progress bar or info logs")
    common = argparse.ArgumentParser(add_help=False, parents=[runtime])
    common.add_argument("--model", default=None,
                        help="model folder or hub name (default: the model shipped with pengi)")
    common.add_argument("--num-beams", type=int, default=None, help="beam width (default: the model's)")
    common.add_argument("--max-new-tokens", type=int, default=None)

    parser = argparse.ArgumentParser(prog="pengi", description="Audio-language models: caption and question audio, "
                                                               "classify, embed and search audio with CLAP.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("caption", parents=[common], help="caption files, folders, globs or manifests")
    p.add_argument("inputs", nargs="+", help="audio files, folders, glob patterns or .jsonl/.csv manifests")
    p.add_argument("--out", required=True, help="results file, .jsonl or .csv; re-running skips finished clips")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"prompt for every clip (default: {DEFAULT_PROMPT!r})")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--windows", action="store_true", help="caption long files window by window (one row each)")
    p.add_argument("--hop", type=float, default=None, help="seconds between window starts (default: no overlap)")
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser("ask", parents=[common], help="ask a question about audio clips")
    p.add_argument("audio", nargs="+")
    p.add_argument("question")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("describe", parents=[common], help="caption, metadata and sound events of clips")
    p.add_argument("audio", nargs="+")
    p.set_defaults(func=cmd_describe)

    options = "; ".join(f"{name}: {', '.join(fn.__code__.co_varnames[:fn.__code__.co_argcount])}"
                        for name, fn in ADAPTERS.items())
    p = sub.add_parser("manifest", help="write a training/evaluation manifest from a corpus in its publisher's layout",
                       description=f"Options per corpus (KEY=VALUE) -- {options}")
    p.add_argument("corpus", choices=sorted(ADAPTERS))
    p.add_argument("options", nargs="*", help="adapter options, e.g. root=/data/ESC-50 'folds=[1,2,3,4]'")
    p.add_argument("--out", required=True, help="manifest to write (.jsonl or .csv)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("eval", parents=[common], help="evaluate a model on a benchmark file (eval/benchmarks/)")
    p.add_argument("--benchmark", required=True, help="benchmark YAML, e.g. eval/benchmarks/esc50.yaml")
    p.add_argument("--out", required=True, help="folder for predictions (resumable), results.json/.md and plots")
    p.add_argument("--data-root", default=None,
                   help="folder that relative manifest paths start from (default: $PENGI_DATA_ROOT, else the "
                        "benchmark's data_root)")
    p.add_argument("--batch-size", type=int, default=None, help="clips per batch (default: the benchmark's)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N clips of each dataset")
    p.add_argument("--only", nargs="+", default=None, metavar="DATASET", help="evaluate only these datasets")
    p.add_argument("--overwrite", action="store_true", help="discard predictions made with other settings")
    p.set_defaults(func=cmd_eval)

    from .cli_clap import add_clap_commands  # here: cli_clap uses this module's helpers

    add_clap_commands(sub, runtime)

    p = sub.add_parser("serve", help="serve a model over HTTP: OpenAI-compatible API, batching, a web page")
    serving_cli.add_arguments(p)
    p.set_defaults(func=serving_cli.run)

    p = sub.add_parser("convert", help="convert published checkpoints into a pengi model folder")
    sources = p.add_subparsers(dest="source", required=True)
    add_convert_parser(sources)
    add_convert_parsers(sources)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)  # `pengi convert` has no --quiet
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(message)s")
    for option in ("batch_size", "limit"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            log.error("--%s must be at least 1", option.replace("_", "-"))
            return 2
    try:
        return args.func(args)
    except PengiInputError as err:
        log.error("%s", err)
        return 1
    except (OSError, ValueError) as err:
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
