"""One input list split into N parts without a cluster (SLURM job arrays and the like): each part is chosen by a
hash of the input, so the split is the same in every process, whatever order the inputs came in, and a file added
to the corpus later joins one part without moving the others. Each part writes its own output, named after the
part (``captions.jsonl`` -> ``captions-3-of-8.jsonl``); `pengi merge` joins them."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence

from pengi.batch.inputs import Job
from pengi.errors import PengiInputError

SHARD_NAME = re.compile(r"-(\d+)-of-(\d+)$")


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` (I counted from 0, as SLURM's array task ids usually are) as ``(I, N)``."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise PengiInputError("--shard", f"takes I/N, e.g. 0/8 for the first of eight parts; got {text!r}") from None
    if not sep or n < 1 or not 0 <= i < n:
        raise PengiInputError("--shard", f"takes I/N with 0 <= I < N (parts are counted from 0); got {text!r}")
    return i, n


def shard_of(job: Job, count: int) -> int:
    """The part ``job`` belongs to among ``count``: a hash of its audio and prompt."""
    digest = hashlib.sha256(f"{job.audio}\n{job.prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % count


def select_shard(jobs: Sequence[Job], index: int, count: int) -> list[Job]:
    """The jobs of part ``index`` of ``count``, in their order."""
    return [job for job in jobs if shard_of(job, count) == index]


def shard_output(path: str, index: int, count: int) -> str:
    """Part ``index``'s output: ``NAME-I-of-N.EXT`` (standard output stays standard output)."""
    if path == "-":
        return path
    stem, ext = os.path.splitext(path.rstrip("/"))
    return f"{stem}-{index}-of-{count}{ext}"


def shard_name(path: str) -> tuple[str, int, int] | None:
    """``(NAME.EXT, I, N)`` for a part's output ``NAME-I-of-N.EXT``, else None."""
    stem, ext = os.path.splitext(path.rstrip("/"))
    match = SHARD_NAME.search(stem)
    if not match:
        return None
    return stem[: match.start()] + ext, int(match.group(1)), int(match.group(2))
