"""`pengi embed`: audio embeddings of files, folders, globs and manifests into an index, resumably."""

from __future__ import annotations

import argparse
import logging

from pengi.batch.embedding import ROWS_PER_FILE, IndexWriter, embedding_rows, load_clip
from pengi.batch.engine import BatchWork, run_batch
from pengi.cli.common import batch_options, engine_options, model_source, positive_int, runtime_options, select_jobs
from pengi.errors import PengiInputError

log = logging.getLogger("pengi")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", parents=[batch_options("embeddings"), runtime_options()],
                       help="audio embeddings of files and folders with a CLAP (or SLAP) model")
    p.add_argument("--model", default=None, help="CLAP or SLAP model folder (required: pengi ships none)")
    p.add_argument("--rows-per-file", type=positive_int, default=ROWS_PER_FILE,
                   help=f"a larger index is sharded into files of this many rows, listed in NAME.shards.json "
                        f"(default: {ROWS_PER_FILE})")
    p.set_defaults(func=run, batch_size=32)
    for action in p._actions:
        if action.dest == "out":
            action.required, action.default = True, None
            action.help = ("NAME.safetensors (the embeddings); NAME.jsonl beside it names each row's file. "
                           "Rerunning adds only the files not in it yet")


def run(args: argparse.Namespace) -> int:
    if not args.out.endswith(".safetensors"):
        raise PengiInputError("--out", f"must end in .safetensors (the file names go beside it, in NAME.jsonl), "
                                       f"got {args.out!r}")
    jobs = select_jobs(args)  # renames --out for a --shard
    options = engine_options(args)
    source = model_source(args, "contrastive")
    writers: list[IndexWriter] = []

    def open_writer() -> IndexWriter:
        writers.append(IndexWriter(args.out, source.name, rows_per_file=args.rows_per_file))
        return writers[-1]

    report = run_batch(BatchWork(source, load_clip, embedding_rows, desc="embedding"), jobs, open_writer, options)
    log.info("embedded %d file(s), %d failed; %d embeddings in %s", report.done, report.failed,
             len(writers[-1]) if writers else 0, args.out)
    return 1 if report.failed else 0
