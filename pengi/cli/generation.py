"""The run that `pengi caption`, `ask` and `describe` share: inputs to result rows with a Pengi model."""

from __future__ import annotations

import argparse
import functools
import logging

from pengi.batch.generation import CropNotice, GenerationTask
from pengi.batch.local import run_local
from pengi.batch.results import ResultWriter
from pengi.cli.common import decode_workers, decoding_kwargs, load_model, unique_jobs
from pengi.errors import PengiInputError

log = logging.getLogger("pengi")


def window_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--windows", action="store_true",
                   help="process long recordings window by window (one row per window, with start and end)")
    p.add_argument("--hop", type=float, default=None,
                   help="with --windows: seconds between window starts (default: the window, no overlap)")


def task_from_args(args: argparse.Namespace, fields: dict[str, str] | None = None) -> GenerationTask:
    """The generation task the options ask for; bad combinations fail before any model is loaded."""
    if args.hop is not None:
        if not args.windows:
            raise PengiInputError("--hop", "sets the distance between windows: add --windows")
        if args.hop <= 0:
            raise PengiInputError("--hop", f"must be greater than 0 seconds, got {args.hop}")
    return GenerationTask(windows=args.windows, hop=args.hop, decoding=decoding_kwargs(args), seed=args.seed,
                          fields=fields)


def run_generation(args: argparse.Namespace, prompt: str, task: GenerationTask, desc: str) -> int:
    """Run ``task`` on every input (``prompt`` for those whose manifest row names none); exit status 1 if any
    input failed, 2 if there were none."""
    jobs = unique_jobs(args.inputs, "" if task.fields else prompt)
    model = load_model(args)
    proc = model.processor
    window = proc.clip_samples / proc.sample_rate
    if task.windows and task.hop is not None and task.hop > window:
        log.warning("--hop %.2f s is longer than the model's %.2f s window: the audio between windows is skipped",
                    task.hop, window)
    notice = CropNotice(window, model.config.long_audio)
    with ResultWriter(args.out, task.result_fields) as writer:
        report = run_local(jobs, writer, functools.partial(task.load, proc), lambda batch: task.rows(model, batch),
                           output=args.out, batch_size=args.batch_size,
                           decode_workers=decode_workers(args, model.device), decode_processes=args.decode_processes,
                           desc=desc, quiet=args.quiet, on_batch=notice.check)
    notice.summary()
    where = "" if args.out == "-" else f"; results in {args.out}"
    log.info("%s %d input(s), %d failed%s", desc, report.done, report.failed, where)
    return 1 if report.failed else 0

