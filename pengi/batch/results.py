"""Result files of a batch job: one row per input (per window in window mode), its latest outcome, written as each
batch finishes so that a killed run resumes where it stopped.

A rerun skips the inputs that have a result and retries the ones that failed. A new row for an input that is
already in the file (a retried failure) replaces the old one: the file is then rewritten under a temporary name
and renamed over the old one, so it never holds two rows for one input and a ``kill -9`` at any moment loses at
most the row being written. New inputs are appended and flushed to disk.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from pengi.batch.inputs import Job

STDOUT = "-"


def row_key(row: dict[str, Any]) -> tuple[str, str]:
    """The input a row belongs to: its audio and prompt."""
    return str(row.get("audio") or ""), str(row.get("prompt") or "")


class ResultWriter:
    """Result rows in a JSONL or CSV file (by extension), or JSONL on standard output for ``path`` "-".

    ``fields`` are the CSV columns (list and dict values are written as JSON). Rows of one input are written
    together (all the windows of a recording in window mode); `done` tells whether an input has its result:
    rows without an ``error``, and in window mode all ``windows`` of them. A half-written last line left by a
    killed run is dropped.
    """

    def __init__(self, path: str, fields: list[str]):
        self.path, self.fields = path, fields
        self.is_csv = path.lower().endswith(".csv")
        self.to_stdout = path == STDOUT
        self._by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._file = None
        if self.to_stdout:
            return
        rows = read_rows(path, repair=True)
        if self.is_csv and rows and list(rows[0]) != fields:
            raise ValueError(f"{path}: has the columns {list(rows[0])}, not this command's {fields}; "
                             "write to another file")
        self._by_key, superseded = group_rows(rows)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if superseded or not os.path.exists(path) or os.path.getsize(path) == 0:
            self._rewrite()  # one group per input; a new CSV file starts with its header
        self._file = open(path, "a", newline="", encoding="utf-8")

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every row in the file, in file order."""
        return [row for rows in self._by_key.values() for row in rows]

    def done(self, job: Job) -> bool:
        return is_done(self._by_key.get((job.audio, job.prompt)))

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        """Record the rows of finished inputs: appended, or replacing an input's earlier rows."""
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(row_key(row), []).append(row)
        if not groups:
            return
        if self.to_stdout:
            for group in groups.values():
                sys.stdout.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in group)
            sys.stdout.flush()
            return
        replaced = any(key in self._by_key for key in groups)
        self._by_key.update(groups)
        if replaced:
            self._rewrite()
        else:
            self._file.write(self._encode([r for group in groups.values() for r in group], header=False))
            self._sync(self._file)

    def reorder(self, keys: Sequence[tuple[str, str]]) -> None:
        """Put the inputs named by ``keys`` in that order, after the rows of any input they do not name (the Ray
        engine's rows arrive as batches finish; the local engine's in input order): one atomic rewrite, and
        only if the order changes."""
        if self.to_stdout:
            return
        position = {key: n for n, key in enumerate(keys)}
        current = list(self._by_key)
        wanted = [k for k in current if k not in position] + sorted((k for k in current if k in position),
                                                                     key=position.__getitem__)
        if wanted != current:
            self._by_key = {key: self._by_key[key] for key in wanted}
            self._rewrite()

    # ------------------------------------------------------------------ the file
    def _encode(self, rows: list[dict[str, Any]], header: bool) -> str:
        if not self.is_csv:
            return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields, extrasaction="ignore")
        if header:
            writer.writeheader()
        writer.writerows({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                          for k, v in r.items()} for r in rows)
        return buffer.getvalue()

    def _rewrite(self) -> None:
        """Write every row to a temporary file and rename it over the result file (atomic)."""
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            f.write(self._encode(self.rows, header=True))
            self._sync(f)
        if self._file is not None:
            self._file.close()
        os.replace(tmp, self.path)
        if self._file is not None:
            self._file = open(self.path, "a", newline="", encoding="utf-8")

    @staticmethod
    def _sync(f) -> None:
        f.flush()
        os.fsync(f.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_rows(path: str, repair: bool = False) -> list[dict[str, Any]]:
    """The rows of a JSONL or CSV result file, in file order (none if it does not exist). A half-written last line
    left by a killed run is skipped, and with ``repair`` cut from the file."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):  # killed mid-line: drop the partial row
        data = data[: data.rfind(b"\n") + 1]
        if repair:
            with open(path, "wb") as f:
                f.write(data)
    text = data.decode("utf-8")
    if path.lower().endswith(".csv"):
        return list(csv.DictReader(text.splitlines()))
    rows = []
    for line in text.splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def group_rows(rows: Iterable[dict[str, Any]]) -> tuple[dict[tuple[str, str], list[dict[str, Any]]], bool]:
    """Rows grouped by input, in order of first appearance, and whether an input had two groups (a later group
    of an input's rows, from a file appended to by an older pengi, replaces the earlier one)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    previous, superseded = None, False
    for row in rows:  # an input's rows are contiguous
        key = row_key(row)
        if key != previous and key in groups:
            groups.pop(key)
            superseded = True
        groups.setdefault(key, []).append(row)
        previous = key
    return groups, superseded


def is_done(rows: list[dict[str, Any]] | None) -> bool:
    """Whether an input's rows are its result: no error, and in window mode every window."""
    if not rows or any(row.get("error") for row in rows):
        return False
    total = rows[0].get("windows")
    return total in (None, "") or len({str(r.get("window")) for r in rows}) == int(total)
