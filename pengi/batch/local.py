"""The local engine: a batch job in this process, decoding ahead in threads, writing each batch as it finishes."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tqdm.auto import tqdm

from pengi.batch.inputs import Job
from pengi.batch.prefetch import prefetched
from pengi.errors import PengiInputError

log = logging.getLogger("pengi")


class Writer(Protocol):
    """Where a job's results go (`ResultWriter`, or an embedding index): what is done, and new rows."""

    def done(self, job: Job) -> bool: ...

    def write(self, rows: list[dict[str, Any]]) -> None: ...


@dataclass
class JobReport:
    """What a run did; ``model_busy`` is the fraction of the run's time the model was working (the rest it
    waited for decoded audio)."""

    total: int
    skipped: int = 0
    failed: int = 0
    model_busy: float | None = None

    @property
    def done(self) -> int:
        return self.total - self.skipped - self.failed


def pending(jobs: Sequence[Job], writer: Writer, output: str) -> tuple[list[Job], int]:
    """The jobs without a result yet, and how many were skipped (logged)."""
    todo = [job for job in jobs if not writer.done(job)]
    if len(todo) < len(jobs):
        log.info("%d of %d already in %s; skipping them", len(jobs) - len(todo), len(jobs), output)
    return todo, len(jobs) - len(todo)


def report_errors(loaded: list[tuple[Job, Any]]) -> int:
    """Print each input of a batch that could not be read (above the progress bar); how many there were."""
    bad = [item for _, item in loaded if isinstance(item, PengiInputError)]
    for err in bad:
        tqdm.write(f"error: {err}", file=sys.stderr)
    return len(bad)


def run_local(jobs: Sequence[Job], writer: Writer, load: Callable[[Job], Any],
              process: Callable[[list[tuple[Job, Any]]], list[dict[str, Any]]], *, output: str, batch_size: int,
              decode_workers: int = 2, decode_processes: bool = False, desc: str = "processing",
              quiet: bool = False, on_batch: Callable[[list[tuple[Job, Any]]], None] | None = None) -> JobReport:
    """Run ``process`` on batches of the jobs not yet done, loaded by ``load`` ahead in ``decode_workers`` threads
    (or processes), and hand each batch's rows to ``writer``. Unreadable inputs are reported and become the error
    rows ``process`` makes."""
    todo, skipped = pending(jobs, writer, output)
    report = JobReport(total=len(jobs), skipped=skipped)
    # No bar when the rows themselves go to the same terminal.
    shared_terminal = output == "-" and sys.stdout.isatty() and sys.stderr.isatty()
    bar = tqdm(total=len(todo), unit="clip", desc=desc, disable=quiet or shared_terminal, file=sys.stderr)
    busy, started = 0.0, time.perf_counter()
    for loaded in prefetched(todo, batch_size, load, workers=decode_workers, processes=decode_processes):
        report.failed += report_errors(loaded)
        if on_batch is not None:
            on_batch(loaded)
        start = time.perf_counter()
        rows = process(loaded)
        busy += time.perf_counter() - start
        writer.write(rows)
        bar.update(len(loaded))
    bar.close()
    if todo:
        report.model_busy = busy / max(time.perf_counter() - started, 1e-9)
    return report
