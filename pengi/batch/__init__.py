"""Batch inference over many files: the inputs (`inputs`), decoding ahead of the model (`prefetch`), resumable
result files (`results`), what a generation or embedding job does per batch (`generation`, `embedding`), and
the engine that runs a job in this process (`local`). Used by `pengi caption`/`ask`/`describe`, the CLAP
commands and `pengi eval`."""

from pengi.batch.inputs import AUDIO_EXTENSIONS, Job, find_jobs
from pengi.batch.prefetch import batched, prefetched
from pengi.batch.results import ResultWriter

__all__ = ["AUDIO_EXTENSIONS", "Job", "ResultWriter", "batched", "find_jobs", "prefetched"]
