"""Batch jobs over many files: find the inputs, and write results row by row so a run can resume."""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".caf", ".w64"}
MANIFEST_EXTENSIONS = {".jsonl", ".csv"}
MANIFEST_AUDIO_COLUMNS = ("audio", "path", "file_name", "audio_path")
FIELDS = ["audio", "prompt", "start", "end", "window", "windows", "text", "error"]


@dataclass(frozen=True)
class Job:
    """One audio input and the prompt to run on it."""

    audio: str
    prompt: str


def find_jobs(inputs: Iterable[str], prompt: str) -> list[Job]:
    """Expand files, folders (searched recursively), glob patterns and manifests into jobs, in a stable order.

    A manifest (``.jsonl`` or ``.csv``) has one row per clip with an ``audio`` column (or ``path``,
    ``file_name``) and optionally a ``prompt`` column; relative paths are taken from the manifest's folder.
    A named file that does not exist is kept, so that it is reported as an error row rather than lost.
    """
    jobs: list[Job] = []
    for item in inputs:
        ext = os.path.splitext(item)[1].lower()
        if os.path.isdir(item):
            files = [os.path.join(root, f) for root, _, names in os.walk(item) for f in names
                     if os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS]
            jobs += [Job(f, prompt) for f in sorted(files)]
        elif ext in MANIFEST_EXTENSIONS and os.path.isfile(item):
            jobs += _read_manifest(item, prompt)
        elif glob.has_magic(item):
            jobs += [Job(f, prompt) for f in sorted(glob.glob(item, recursive=True)) if os.path.isfile(f)]
        else:
            jobs.append(Job(item, prompt))
    return jobs


def _read_manifest(path: str, prompt: str) -> list[Job]:
    base = os.path.dirname(os.path.abspath(path))
    if path.lower().endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    else:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    jobs = []
    for n, row in enumerate(rows, start=1):
        column = next((c for c in MANIFEST_AUDIO_COLUMNS if row.get(c)), None)
        if column is None:
            raise ValueError(f"{path}: row {n} has no audio column (one of {', '.join(MANIFEST_AUDIO_COLUMNS)})")
        audio = os.path.join(base, row[column]) if not os.path.isabs(row[column]) else row[column]
        jobs.append(Job(audio, row.get("prompt") or prompt))
    return jobs


class ResultWriter:
    """Append result rows to a JSONL or CSV file (chosen by extension), flushed after every write.

    On opening, rows already in the file are read (kept in ``rows``) so that `done` tells which jobs are
    finished: a job with an error row is tried again; in window mode a job is done only when all its windows
    are there. A half-written last line left by a killed run is cut off. ``fields`` are the CSV columns; in
    CSV, list and dict values are written as JSON.
    """

    def __init__(self, path: str, fields: list[str] = FIELDS):
        self.path = path
        self.is_csv = path.lower().endswith(".csv")
        self._done: set[tuple[str, str]] = set()
        self.rows = rows = self._read_existing()
        if self.is_csv and rows and list(rows[0]) != fields:
            raise ValueError(f"{path}: has the columns {list(rows[0])}, not this command's {fields}; "
                             "write to another file")
        windows: dict[tuple[str, str], set[int]] = {}
        for row in rows:
            key = (row.get("audio", ""), row.get("prompt", ""))
            if row.get("error"):
                continue
            if row.get("windows") not in (None, ""):
                windows.setdefault(key, set()).add(int(row["window"]))
                if len(windows[key]) == int(row["windows"]):
                    self._done.add(key)
            else:
                self._done.add(key)
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        self._file = open(path, "a", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._file, fieldnames=fields, extrasaction="ignore") if self.is_csv else None
        if self._csv is not None and new:
            self._csv.writeheader()
            self._file.flush()

    def _read_existing(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as f:
            data = f.read()
        if data and not data.endswith(b"\n"):  # killed mid-line: drop the partial row
            data = data[: data.rfind(b"\n") + 1]
            with open(self.path, "wb") as f:
                f.write(data)
        text = data.decode("utf-8")
        if self.is_csv:
            return list(csv.DictReader(text.splitlines()))
        rows = []
        for line in text.splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return rows

    def done(self, job: Job) -> bool:
        return (job.audio, job.prompt) in self._done

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if self._csv is not None:
                self._csv.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                                    for k, v in row.items()})
            else:
                self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def batched(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def prefetched(items: list[Any], size: int, load: Callable[[list[Any]], Any]) -> Iterator[Any]:
    """``load`` of each batch of ``items``, the next batch decoding in a thread while the caller uses this one
    (soundfile and torchaudio release the GIL, so decoding overlaps the model's work)."""
    batches = list(batched(items, size))
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, batches[0]) if batches else None
        for i in range(len(batches)):
            loaded = pending.result()
            pending = pool.submit(load, batches[i + 1]) if i + 1 < len(batches) else None
            yield loaded
