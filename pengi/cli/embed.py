"""`pengi embed`: audio embeddings of files, folders, globs and manifests into an index, resumably."""

from __future__ import annotations

import argparse
import functools
import logging

from pengi.batch.embedding import IndexWriter, embedding_rows, load_clip
from pengi.batch.local import run_local
from pengi.cli.common import batch_options, decode_workers, load_contrastive, model_name, runtime_options, unique_jobs
from pengi.errors import PengiInputError

log = logging.getLogger("pengi")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", parents=[batch_options("embeddings"), runtime_options()],
                       help="audio embeddings of files and folders with a CLAP (or SLAP) model")
    p.add_argument("--model", default=None, help="CLAP or SLAP model folder (required: pengi ships none)")
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
    jobs = unique_jobs(args.inputs)
    model = load_contrastive(args)
    writer = IndexWriter(args.out, model_name(args))
    try:
        report = run_local(jobs, writer, functools.partial(load_clip, model.processor),
                           lambda batch: embedding_rows(model, batch), output=args.out, batch_size=args.batch_size,
                           decode_workers=decode_workers(args, model.device), decode_processes=args.decode_processes,
                           desc="embedding", quiet=args.quiet)
    finally:
        writer.close()
    log.info("embedded %d file(s), %d failed; %d embeddings in %s", report.done, report.failed,
             len(writer.index), args.out)
    return 1 if report.failed else 0
