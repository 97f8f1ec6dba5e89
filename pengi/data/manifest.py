"""The manifest: one row per training or evaluation example, in JSONL or CSV.

Columns: ``audio`` (path, relative to the manifest's folder or absolute), optional ``offset`` and
``duration`` (seconds; the excerpt to use), ``task`` (a key of `TASK_PROMPTS`), ``prompt`` (defaults
to the task's prompt), ``answer`` (the target text), optional ``dataset`` (a name, for mixtures and
per-dataset metrics) and ``question_type`` (for per-type QA scores: "yes/no", "count", ...). Loaded with
`datasets`, so corpora too large for memory can be streamed.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import datasets

COLUMNS = ["audio", "offset", "duration", "task", "prompt", "answer", "dataset", "question_type"]
REQUIRED = ("audio", "answer")


def write_manifest(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> int:
    """Write rows as JSONL or CSV (by extension); returns the number of rows written.

    The file appears only when every row was written (under a temporary name, then renamed), so a failure part
    way leaves no manifest behind. Audio paths are written as given: absolute, or relative to the manifest's own
    folder (how `load_manifest` reads them).
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp, n = path + ".tmp", 0
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore") if path.endswith(".csv") else None
            if writer:
                writer.writeheader()
            for row in rows:
                full = {c: row.get(c) for c in COLUMNS}
                if writer:
                    writer.writerow({k: "" if v is None else v for k, v in full.items()})
                else:
                    f.write(json.dumps(full, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return n


def load_manifest(path: str | os.PathLike, streaming: bool = False
                  ) -> datasets.Dataset | datasets.IterableDataset:
    """Load a manifest as a `datasets` dataset with absolute audio paths and the prompt filled in."""
    from pengi.data.tasks import prompt_for

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: manifest not found")
    kind = "csv" if path.endswith(".csv") else "json"
    features = datasets.Features({
        "audio": datasets.Value("string"), "offset": datasets.Value("float64"),
        "duration": datasets.Value("float64"), "task": datasets.Value("string"),
        "prompt": datasets.Value("string"), "answer": datasets.Value("string"), "dataset": datasets.Value("string"),
        "question_type": datasets.Value("string"),
    })
    ds = datasets.load_dataset(kind, data_files=path, split="train", streaming=streaming, features=features)
    base = os.path.dirname(os.path.abspath(path))

    def complete(row: dict[str, Any]) -> dict[str, Any]:
        for column in REQUIRED:
            if not row.get(column):
                raise ValueError(f"{path}: a row has no {column!r}: {row}")
        audio = row["audio"] if os.path.isabs(row["audio"]) else os.path.join(base, row["audio"])
        prompt = row.get("prompt") or prompt_for(row.get("task") or "caption")
        return {"audio": audio, "prompt": prompt, "offset": row.get("offset") or 0.0,
                "task": row.get("task") or "caption", "dataset": row.get("dataset") or os.path.basename(path)}

    return ds.map(complete)
