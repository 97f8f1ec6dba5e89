"""The Ray engine: a batch command on a Ray cluster (an existing one, or a local one that Ray starts), as a Ray
Data pipeline behind the contract of `pengi.batch.engine`.

    the pending jobs, cut into the local engine's batches (one dataset row per batch)
      -> decoding in CPU tasks: the command's own ``load`` on each input, a bad file kept as its error (data,
         never a failed task); relative paths are read from the driver's working directory
      -> the model in a pool of actors (``map_batches`` with a callable class, ``ActorPoolStrategy``, ``num_gpus``
         per actor), each opening the model once; ``batch_size=1`` row is one batch of ``--batch-size`` clips, so
         the model gets the batches the local engine gives it and makes the same rows
      -> the driver, which hands each batch's rows to the command's writer as they arrive.

Resume is the writer's, as locally: what the output holds is done, and only the driver writes, one group of rows
per input. Rows arrive as batches finish; at the end a result file is put back in input order (with ``--out -``
Ray keeps the order while streaming). Ray retries the batch of a model worker that died, on a restarted worker.
Every node must have pengi installed and see the inputs and the model folder at the same paths.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from tqdm.auto import tqdm

from pengi.batch.inputs import Job
from pengi.batch.local import JobReport, Writer, pending
from pengi.batch.models import ModelSource
from pengi.batch.prefetch import batched, load_or_error
from pengi.errors import PengiInputError

log = logging.getLogger("pengi")
RAY_MISSING = 'needs Ray, which is not installed: pip install "pengi[ray]"'
MAX_BLOCKS = 10_000  # dataset blocks of the job list (each holds one or more batches)
DECODE_TASK_MEMORY = 768 * 2**20  # a Ray worker with torch and pengi imported (~520 MiB measured), and headroom


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or a `PengiInputError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise PengiInputError("--engine ray", RAY_MISSING) from None
    return ray


# ----------------------------------------------------------------------------- what runs on the cluster
def decode_batch(row: dict[str, Any], *, processor: Any, load: Callable[[Any, Job], Any], notice: Any,
                 cwd: str) -> dict[str, Any]:
    """A Ray task: load one batch's inputs, as the local engine's decoding threads do."""
    torch.set_num_threads(1)  # one task per CPU
    if os.path.isdir(cwd):
        os.chdir(cwd)  # relative inputs are the driver's
    jobs = [Job(str(a), str(p)) for a, p in zip(row["audio"], row["prompt"])]
    items = [load_or_error(partial(load, processor), job) for job in jobs]
    notes = [notice.inspect(job, item) for job, item in zip(jobs, items)] if notice is not None else None
    # Pickled by hand into one bytes column: the items are arbitrary objects (tensors, errors) made and read by
    # pengi's own code inside this cluster, as Ray itself pickles everything it moves.
    return {"batch": row["batch"], "audio": row["audio"], "prompt": row["prompt"],
            "items": pickle.dumps((items, notes), protocol=5)}


class ModelWorker:
    """A Ray actor holding the model: opened once (on the actor's GPU if it has one), then one call per batch.
    Each output row is one batch: its rows, errors and notices, and the time the call took."""

    def __init__(self, source: ModelSource, process: Callable[[Any, list[tuple[Job, Any]]], list[dict[str, Any]]],
                 threads: int):
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        torch.set_num_threads(threads)
        self.model = source.open()
        self.process = process
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.ready_at = time.time()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {name: [] for name in ("batch", "result", "jobs", "worker", "ready_at",
                                                            "started_at", "busy_s")}
        for number, audio, prompt, blob in zip(batch["batch"], batch["audio"], batch["prompt"], batch["items"]):
            started = time.time()
            jobs = [Job(str(a), str(p)) for a, p in zip(audio, prompt)]
            items, notes = pickle.loads(blob)
            rows = self.process(self.model, list(zip(jobs, items)))
            errors = [str(item) for item in items if isinstance(item, PengiInputError)]
            for name, value in (("batch", int(number)), ("result", pickle.dumps((rows, errors, notes), protocol=5)),
                                ("jobs", len(jobs)), ("worker", self.name), ("ready_at", self.ready_at),
                                ("started_at", started), ("busy_s", time.time() - started)):
                out[name].append(value)
        return out


# ----------------------------------------------------------------------------- the driver
@dataclass
class WorkerUsage:
    """How busy the model workers were: the time in the model over the time since each was ready (the rest it
    waited for decoded audio, or for the driver)."""

    spans: dict[str, list[float]] = field(default_factory=dict)  # worker -> [ready, last end, busy seconds]

    def add(self, worker: str, ready_at: float, started_at: float, busy_s: float) -> None:
        span = self.spans.setdefault(worker, [ready_at, ready_at, 0.0])
        span[1] = max(span[1], started_at + busy_s)
        span[2] += busy_s

    @property
    def busy_fraction(self) -> float | None:
        total = sum(end - ready for ready, end, _ in self.spans.values())
        return sum(busy for *_, busy in self.spans.values()) / total if total > 0 else None


def check_device(name: str) -> None:
    if name not in ("auto", "cpu", "cuda"):
        raise PengiInputError("--device", f"with --engine ray, use auto (each model worker's GPU if Ray gave it "
                                          f"one), cuda or cpu; Ray chooses the GPU of each worker; got {name!r}")


def connect(ray: Any, address: str | None, quiet_workers: bool) -> bool:
    """Join the cluster at ``address`` (else RAY_ADDRESS, else the one `ray start` started on this machine), or
    start a local one; whether it is an existing cluster named by the user."""
    named = address not in (None, "local") or bool(os.environ.get("RAY_ADDRESS"))
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=not quiet_workers)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = address or os.environ.get("RAY_ADDRESS") or "a local Ray cluster"
        text = " ".join(str(err).split()) or type(err).__name__
        causes, cause = "", err.__cause__ or err.__context__
        while cause is not None:
            causes, cause = causes + str(cause), cause.__cause__ or cause.__context__
        hint = ("; the cluster uses token authentication: set RAY_AUTH_MODE=token, with its token in "
                "~/.ray/auth_token or RAY_AUTH_TOKEN" if "AuthToken" in causes + text else "")
        raise PengiInputError("--address", f"cannot connect to {where}: {text[:300]}{hint}") from None
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": ours show
    return named


def plan_workers(resources: dict[str, float], options: Any, named_cluster: bool) -> tuple[int, float, float]:
    """``(workers, GPUs, CPUs per worker)``: the options, else one worker per GPU, or one per two CPUs; checked
    against the cluster, leaving at least one CPU for decoding. What a cluster started here lacks is an error; a
    named cluster may be autoscaling, so there it is a warning."""
    gpus_total, cpus_total = resources.get("GPU", 0.0), resources.get("CPU", 1.0)
    gpus = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if gpus_total >= 1 else 0.0)
    cpus = options.cpus_per_worker or min(1.0, cpus_total / 2)
    if options.workers:
        workers = options.workers
    elif gpus:
        workers = max(1, int(gpus_total // gpus))
    else:  # half the CPUs for the model, half for decoding
        workers = max(1, int(cpus_total // (2 * cpus)))
    lacking = []
    if workers * gpus > gpus_total:
        lacking.append(("--gpus-per-worker", f"{workers} model worker(s) with {gpus:g} GPU(s) each need "
                                             f"{workers * gpus:g} GPUs, but the Ray cluster has {gpus_total:g}"))
    if workers * cpus > cpus_total - min(1.0, cpus_total / 2):
        lacking.append(("--cpus-per-worker", f"{workers} model worker(s) with {cpus:g} CPU(s) each leave no CPU "
                                             f"for decoding: the Ray cluster has {cpus_total:g}"))
    for name, message in lacking:
        if not named_cluster:
            option = "--workers" if options.workers else name
            raise PengiInputError(option, message + ("; leave --gpus-per-worker out (or 0) to run on CPUs"
                                                     if name == "--gpus-per-worker" and not gpus_total else ""))
        log.warning("%s now: the run waits for nodes that have them (an autoscaling cluster adds them)", message)
    return workers, gpus, cpus


def run_ray(work: Any, jobs: Sequence[Job], open_writer: Callable[[], AbstractContextManager[Writer]],
            options: Any) -> JobReport:
    """`pengi.batch.engine.run_batch` on Ray."""
    ray = import_ray()
    check_device(work.source.device)
    processor = work.source.processor()  # what decoding needs; the driver loads no weights
    if processor.crops_at_random:
        log.warning("this model crops long clips at random (its release's preprocessing): the crops depend on the "
                    "order clips are decoded in, which differs between engines and runs")
    named = connect(ray, options.address, quiet_workers=options.quiet or options.output == "-")
    try:
        resources = ray.cluster_resources()
        workers, gpus, cpus = plan_workers(resources, options, named)
        with open_writer() as writer:
            todo, skipped = pending(jobs, writer, options.output)
            report = JobReport(total=len(jobs), skipped=skipped)
            if todo:
                log.info("Ray cluster with %g CPUs and %g GPUs: %d model worker(s) with %g GPU(s) and %g CPU(s) "
                         "each, batches of %d", resources.get("CPU", 0), resources.get("GPU", 0), workers, gpus,
                         cpus, options.batch_size)
                threads = options.threads or max(1, int(cpus))
                stream(ray, work, processor, todo, writer, report, options, workers, gpus, cpus, threads)
            if hasattr(writer, "reorder"):
                writer.reorder([(job.audio, job.prompt) for job in jobs])
        return report
    finally:
        ray.shutdown()


def stream(ray: Any, work: Any, processor: Any, todo: list[Job], writer: Writer, report: JobReport,
           options: Any, workers: int, gpus: float, cpus: float, threads: int) -> None:
    """Build the pipeline and write each batch's rows as it comes out."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # pengi's own bar counts clips
    context.execution_options.preserve_order = options.output == "-"
    batches = list(batched(todo, options.batch_size))
    rows = [{"batch": n, "audio": [job.audio for job in b], "prompt": [job.prompt for job in b]}
            for n, b in enumerate(batches)]
    ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
    # Each decoding task reserves one CPU and its memory: a worker process with torch loaded, and a batch of
    # decoded audio (with room for the source rate and resampling). The memory reservation also keeps decoding an
    # operator of its own: Ray Data fuses a task map into the actor map after it when both reserve the same
    # resources (a CPU-only run), and decoding would then stop overlapping the model.
    memory = DECODE_TASK_MEMORY + options.batch_size * 4 * processor.clip_samples * 4
    ds = ds.map(partial(decode_batch, processor=processor, load=work.load, notice=work.notice, cwd=os.getcwd()),
                num_cpus=1, memory=memory)
    ds = ds.map_batches(ModelWorker, fn_constructor_kwargs={"source": work.source, "process": work.process,
                                                            "threads": threads},
                        batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_gpus=gpus, num_cpus=cpus)
    usage = WorkerUsage()
    shared_terminal = options.output == "-" and sys.stdout.isatty() and sys.stderr.isatty()
    bar = tqdm(total=len(todo), unit="clip", desc=work.desc, disable=options.quiet or shared_terminal,
               file=sys.stderr)
    seen: set[int] = set()
    for out in ds.iter_rows():
        number = int(out["batch"])
        if number in seen:  # a batch Ray ran again after its worker died: its rows were written already
            continue
        seen.add(number)
        batch_rows, errors, notes = pickle.loads(out["result"])
        for error in errors:
            tqdm.write(f"error: {error}", file=sys.stderr)
        report.failed += len(errors)
        if work.notice is not None:
            for job, info in zip(batches[number], notes):
                work.notice.record(job, info)
        writer.write(batch_rows)
        usage.add(str(out["worker"]), float(out["ready_at"]), float(out["started_at"]), float(out["busy_s"]))
        bar.update(int(out["jobs"]))
    bar.close()
    report.model_busy = usage.busy_fraction
    if report.model_busy is not None:
        log.info("model workers: %d, busy %.0f%% of the time (the rest waiting for audio)", len(usage.spans),
                 100 * report.model_busy)
