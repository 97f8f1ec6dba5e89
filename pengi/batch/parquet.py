"""Result rows as a Parquet dataset (``--out DIR.parquet``), for runs too large for one text file: a folder of part
files that pandas, DuckDB, Spark and Ray Data read as one table, with the rows and resume rules of `ResultWriter`
(one row per input, its latest outcome; a rerun skips finished inputs and retries failed ones).

Rows are kept in memory and written as a new part every `ROWS_PER_PART` rows, every `FLUSH_EVERY_S` seconds and
at the end, each part under a temporary name renamed into place: a killed run leaves only whole parts and loses
at most the rows not written yet, which the rerun makes again. A retried input's new row goes into a new part,
then the part that held its old row is rewritten without it. A run killed between the two leaves both rows; the
next open keeps the newer (parts are numbered in the order they were written) and removes the older.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pengi.batch.inputs import Job
from pengi.batch.results import ResultWriter, group_rows, is_done, read_rows, row_key
from pengi.errors import PengiInputError

ROWS_PER_PART = 50_000
FLUSH_EVERY_S = 60.0
PART = re.compile(r"^part-(\d+)\.parquet$")
# Columns are text unless named here.
COLUMN_TYPES = {"start": pa.float64(), "end": pa.float64(), "window": pa.int64(), "windows": pa.int64(),
                "score": pa.float64(), "labels": pa.list_(pa.string()), "scores": pa.list_(pa.float64())}
STATE_COLUMNS = ("audio", "prompt", "error", "window", "windows")

Key = tuple[str, str]


def typed(value: Any, kind: pa.DataType) -> Any:
    """A value for a column of type ``kind``; text read from a CSV file (``pengi merge``) is converted."""
    if not isinstance(value, str) or pa.types.is_string(kind):
        return value
    if value == "":
        return None
    if pa.types.is_list(kind):
        return json.loads(value)
    return int(value) if pa.types.is_integer(kind) else float(value)


def is_parquet(path: str) -> bool:
    return path.rstrip("/").lower().endswith(".parquet")


def part_files(path: str) -> list[tuple[int, str]]:
    """The dataset's parts, ``(number, file)``, oldest first."""
    if not os.path.isdir(path):
        return []
    found = [(int(m.group(1)), os.path.join(path, name)) for name in os.listdir(path) if (m := PART.match(name))]
    return sorted(found)


def read_parquet_results(path: str, columns: Iterable[str] | None = None) -> dict[Key, list[dict[str, Any]]]:
    """Each input's rows in a Parquet result folder (the newest part's, where a run was killed mid-retry)."""
    if not os.path.isdir(path):
        raise PengiInputError(path, "no such Parquet result folder")
    groups: dict[Key, list[dict[str, Any]]] = {}
    for _, file in part_files(path):
        table = pq.read_table(file)
        names = table.column_names if columns is None else [c for c in columns if c in table.column_names]
        part, _ = group_rows(table.select(names).to_pylist())
        for key, rows in part.items():
            groups.pop(key, None)
            groups[key] = rows
    return groups


class ParquetResultWriter:
    """A Parquet result folder as a job's writer: `done`, `write`, `rows`, `close`, as `ResultWriter`."""

    def __init__(self, path: str, fields: list[str], rows_per_part: int = ROWS_PER_PART,
                 flush_every_s: float = FLUSH_EVERY_S):
        self.path, self.fields = path.rstrip("/"), fields
        self.rows_per_part, self.flush_every_s = rows_per_part, flush_every_s
        self.schema = pa.schema([(name, COLUMN_TYPES.get(name, pa.string())) for name in fields])
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise PengiInputError(self.path, "is a file; Parquet results go to a folder (--out DIR.parquet)")
        os.makedirs(self.path, exist_ok=True)
        for name in os.listdir(self.path):
            if name.endswith(".tmp"):  # a part a killed run did not finish writing
                os.remove(os.path.join(self.path, name))
        self._state: dict[Key, list[dict[str, Any]]] = {}  # each input's rows, the columns `done` reads
        self._where: dict[Key, int] = {}  # the part holding each input's rows
        stale: dict[int, set[Key]] = {}
        parts = part_files(self.path)
        for number, file in parts:
            names = pq.read_schema(file).names
            if names != fields:
                raise ValueError(f"{self.path}: has the columns {names}, not this command's {fields}; "
                                 "write to another folder")
            groups, _ = group_rows(pq.read_table(file, columns=[c for c in STATE_COLUMNS if c in names]).to_pylist())
            for key, rows in groups.items():
                if key in self._where:
                    stale.setdefault(self._where[key], set()).add(key)
                self._where[key], self._state[key] = number, rows
        for number, keys in stale.items():
            self._drop(number, keys)
        self._next = parts[-1][0] + 1 if parts else 1
        self._buffer: dict[Key, list[dict[str, Any]]] = {}
        self._flushed_at = time.monotonic()

    def done(self, job: Job) -> bool:
        key = (job.audio, job.prompt)
        return is_done(self._buffer[key] if key in self._buffer else self._state.get(key))

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every row written so far, part by part."""
        self.flush()
        return [row for rows in read_parquet_results(self.path).values() for row in rows]

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        groups: dict[Key, list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(row_key(row), []).append(row)
        self._buffer.update(groups)  # a newer group of an input's rows replaces a buffered one
        if (sum(len(g) for g in self._buffer.values()) >= self.rows_per_part
                or time.monotonic() - self._flushed_at > self.flush_every_s):
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as a new part, then remove the rows they replace from older parts."""
        self._flushed_at = time.monotonic()
        if not self._buffer:
            return
        number, self._next = self._next, self._next + 1
        self._write_part(number, [row for rows in self._buffer.values() for row in rows])
        replaced: dict[int, set[Key]] = {}
        for key, rows in self._buffer.items():
            if key in self._where:
                replaced.setdefault(self._where[key], set()).add(key)
            self._where[key] = number
            self._state[key] = [{c: row.get(c) for c in STATE_COLUMNS} for row in rows]
        self._buffer = {}
        for old, keys in replaced.items():
            self._drop(old, keys)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> ParquetResultWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ parts
    def _file(self, number: int) -> str:
        return os.path.join(self.path, f"part-{number:06d}.parquet")

    def _write_part(self, number: int, rows: list[dict[str, Any]]) -> None:
        file = self._file(number)
        types = {f.name: f.type for f in self.schema}
        table = pa.Table.from_pylist([{name: typed(row.get(name), kind) for name, kind in types.items()}
                                      for row in rows], schema=self.schema)
        with open(file + ".tmp", "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(file + ".tmp", file)

    def _drop(self, number: int, keys: set[Key]) -> None:
        """Rewrite part ``number`` without the rows of ``keys`` (removed when nothing is left)."""
        file = self._file(number)
        kept = [row for row in pq.read_table(file).to_pylist() if row_key(row) not in keys]
        if kept:
            self._write_part(number, kept)
        else:
            os.remove(file)


def open_results(path: str, fields: list[str]) -> ResultWriter | ParquetResultWriter:
    """The writer for ``--out``: a Parquet folder for ``DIR.parquet``, else a JSONL or CSV file (or stdout)."""
    return ParquetResultWriter(path, fields) if is_parquet(path) else ResultWriter(path, fields)


def read_results(path: str) -> dict[Key, list[dict[str, Any]]]:
    """Each input's rows in a result file (JSONL, CSV) or Parquet folder, its latest outcome."""
    if is_parquet(path):
        return read_parquet_results(path)
    if not os.path.isfile(path):
        raise PengiInputError(path, "no such result file")
    return group_rows(read_rows(path))[0]
