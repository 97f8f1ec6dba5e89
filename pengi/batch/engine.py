"""The two engines behind every batch command, and the contract they share.

A command describes its work once, as a `BatchWork`: where the model comes from, how one input is loaded (on a
CPU, from the processor alone) and how a batch of loaded inputs becomes rows. `run_batch` runs it in this process
(`pengi.batch.local`) or on a Ray cluster (`pengi.batch.ray_engine`); both cut the pending inputs into the same
batches, call the same two functions and hand the rows to the same writer, so they write the same rows and follow
the same resume rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from pengi.batch.inputs import Job
from pengi.batch.local import JobReport, Writer, run_local
from pengi.batch.models import ModelSource, default_decode_workers
from pengi.errors import PengiInputError

ENGINES = ("local", "ray")


class Notice(Protocol):
    """Something the driver says about the loaded inputs (that long clips were cropped): ``inspect`` runs where an
    input is decoded and returns a small value, ``record`` runs in the driver with it."""

    def inspect(self, job: Job, item: Any) -> Any: ...

    def record(self, job: Job, info: Any) -> None: ...


@dataclass
class BatchWork:
    """A batch command in parts that can be sent to other processes (module functions, bound methods and
    partials of picklable objects): ``load(processor, job)`` decodes one input (raises `PengiInputError`),
    ``process(model, [(job, item or error), ...])`` makes the rows of a batch, error rows included."""

    source: ModelSource
    load: Callable[[Any, Job], Any]
    process: Callable[[Any, list[tuple[Job, Any]]], list[dict[str, Any]]]
    desc: str = "processing"
    notice: Notice | None = None


@dataclass
class EngineOptions:
    """How to run: the engine, the batch size, the local engine's decoding (``decode_workers`` threads, None:
    chosen for the model's device; ``decode_processes``: processes instead), and for Ray the cluster and the model
    workers (None: chosen from the cluster's resources). Ray decodes in tasks of its own, one per CPU, each a
    process: ``decode_workers`` does not apply there, and ``decode_processes`` is refused."""

    engine: str = "local"
    output: str = "-"
    batch_size: int = 8
    decode_workers: int | None = None
    decode_processes: bool = False
    quiet: bool = False
    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise PengiInputError("--engine", f"must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "local":
            given = [name for name in ("address", "workers", "gpus_per_worker", "cpus_per_worker")
                     if getattr(self, name) is not None]
            if given:
                raise PengiInputError("--" + given[0].replace("_", "-"), "is an option of the Ray engine: "
                                                                         "add --engine ray")
        elif self.decode_processes:
            raise PengiInputError("--decode-processes", "is an option of the local engine: the Ray engine decodes "
                                                        "in Ray tasks, each a process of its own already (one per "
                                                        "CPU of the cluster); leave it out")


def run_batch(work: BatchWork, jobs: Sequence[Job], open_writer: Callable[[], AbstractContextManager[Writer]],
              options: EngineOptions) -> JobReport:
    """Run ``work`` on the jobs that ``open_writer()``'s writer does not hold yet. The writer is opened once the
    model (locally) or the cluster (Ray) is ready, so that a model that cannot load leaves no file behind."""
    if options.engine == "ray":
        from pengi.batch.ray_engine import run_ray

        return run_ray(work, jobs, open_writer, options)
    model = work.source.open()
    notice = work.notice

    def on_batch(loaded: list[tuple[Job, Any]]) -> None:
        for job, item in loaded:
            notice.record(job, notice.inspect(job, item))

    workers = options.decode_workers or default_decode_workers(model.device)
    with open_writer() as writer:
        return run_local(jobs, writer, partial(work.load, model.processor), partial(work.process, model),
                         output=options.output, batch_size=options.batch_size, decode_workers=workers,
                         decode_processes=options.decode_processes, desc=work.desc, quiet=options.quiet,
                         on_batch=on_batch if notice else None)
