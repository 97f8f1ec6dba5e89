"""The inputs of a batch job: files, folders, glob patterns and manifests expanded into jobs, in a stable order."""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".caf", ".w64"}
MANIFEST_EXTENSIONS = {".jsonl", ".csv"}
MANIFEST_AUDIO_COLUMNS = ("audio", "path", "file_name", "audio_path")


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
