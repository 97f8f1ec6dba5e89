"""`pengi merge`: join the outputs of a job's parts (runs with ``--shard I/N``, or any runs of one command) into one
output with one row per input, its latest outcome: result files (JSONL, CSV, Parquet folders, mixed) into a result
file, or embedding indexes into an index.

An input found in several outputs keeps its rows from the one named last. Merged result rows are sorted by audio
path (then prompt), which is the order a run over one folder writes; a merged index is in that order too while it
fits in one file. The output must not exist yet: a result file is written under a temporary name and renamed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from collections import defaultdict
from typing import Any

from pengi.batch.embedding import ROWS_PER_FILE, IndexWriter
from pengi.batch.parquet import ParquetResultWriter, is_parquet, read_results
from pengi.batch.results import ResultWriter
from pengi.batch.shards import shard_name
from pengi.cli.common import positive_int
from pengi.errors import PengiInputError
from pengi.models.clap.embedding_index import open_index, read_shards

log = logging.getLogger("pengi")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="join the outputs of --shard I/N runs (or any runs of one command) into one, "
                                     "one row per input", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", help="result files (.jsonl, .csv, DIR.parquet) or embedding indexes "
                                             "(.safetensors); for an input in several, the last one named wins")
    p.add_argument("--out", required=True, help="the merged output: .jsonl, .csv, DIR.parquet, or .safetensors "
                                                "for indexes (must not exist yet)")
    p.add_argument("--rows-per-file", type=positive_int, default=ROWS_PER_FILE,
                   help=f"for indexes: shard the merged index into files of this many rows (default: {ROWS_PER_FILE})")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def check_parts(paths: list[str]) -> None:
    """Warn when the parts of a sharded run are not all there."""
    parts: dict[tuple[str, int], set[int]] = defaultdict(set)
    for path in paths:
        named = shard_name(path)
        if named:
            parts[(named[0], named[2])].add(named[1])
    for (name, count), found in sorted(parts.items()):
        missing = sorted(set(range(count)) - found)
        if missing:
            log.warning("merging %d of the %d parts of %s: part(s) %s missing", len(found), count, name,
                        ", ".join(map(str, missing)))


def run(args: argparse.Namespace) -> int:
    if os.path.exists(args.out) or read_shards(args.out):
        raise PengiInputError(args.out, "exists; merge into a new output")
    indexes = [p.endswith(".safetensors") for p in args.inputs]
    if any(indexes) != all(indexes) or any(indexes) != args.out.endswith(".safetensors"):
        raise PengiInputError("merge", "joins result files into a result file, or embedding indexes (.safetensors) "
                                       "into an index; not both")
    check_parts(args.inputs)
    return merge_indexes(args) if all(indexes) else merge_results(args)


def merge_results(args: argparse.Namespace) -> int:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    fields: list[str] = []
    for path in args.inputs:
        from_csv = path.lower().endswith(".csv")
        for key, rows in read_results(path).items():
            if from_csv and not args.out.lower().endswith(".csv"):  # CSV's empty cells are absent values
                rows = [{k: v for k, v in row.items() if v != ""} for row in rows]
            groups.pop(key, None)
            groups[key] = rows
            fields += [name for row in rows for name in row if name not in fields]
    fields = [name for name in fields if name != "error"] + ["error"]
    merged = [row for key in sorted(groups) for row in groups[key]]
    stem, ext = os.path.splitext(args.out.rstrip("/"))
    tmp = f"{stem}.merging{ext}"  # the output's own kind (by extension), renamed when whole
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    elif os.path.exists(tmp):
        os.remove(tmp)
    writer = ParquetResultWriter(tmp, fields) if is_parquet(args.out) else ResultWriter(tmp, fields)
    with writer:
        writer.write(merged)
    os.replace(tmp, args.out.rstrip("/"))
    failed = sum(1 for rows in groups.values() if any(row.get("error") for row in rows))
    log.info("merged %d input(s) from %d output(s) into %s%s", len(groups), len(args.inputs), args.out,
             f"; {failed} with an error row" if failed else "")
    return 0


def merge_indexes(args: argparse.Namespace) -> int:
    sources = [open_index(path) for path in args.inputs]
    models = {index.model for index in sources}
    if len(models) > 1:
        raise PengiInputError("merge", f"the indexes were made with different models: {', '.join(sorted(models))}")
    # Which input holds the kept embedding of each clip (the last one named), then one pass over the shards.
    winner = {path: n for n, index in enumerate(sources) for path in index.paths}
    with IndexWriter(args.out, models.pop(), rows_per_file=args.rows_per_file) as writer:
        for n, index in enumerate(sources):
            for shard in (index.shards() if hasattr(index, "shards") else [index]):
                writer.write([{"audio": p, "embedding": e} for p, e in zip(shard.paths, shard.embeddings)
                              if winner[p] == n])
        writer.reorder([(path, "") for path in sorted(winner)])
    log.info("merged %d clip(s) from %d index(es) into %s", len(winner), len(args.inputs), args.out)
    return 0
