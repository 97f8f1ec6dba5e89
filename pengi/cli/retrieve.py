"""`pengi retrieve`: text to audio over a saved index, or audio to text over the lines of a file."""

from __future__ import annotations

import argparse
import json
import logging
import os

from pengi.batch.embedding import embed_batch, load_clip
from pengi.batch.local import report_errors
from pengi.batch.prefetch import prefetched
from pengi.cli.common import load_contrastive, model_name, positive_int, read_lines, runtime_options, unique_jobs
from pengi.errors import PengiInputError
from pengi.models.clap.embedding_index import open_index, top_matches

log = logging.getLogger("pengi")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrieve", parents=[runtime_options()],
                       help="search audio with text (--index) or text with audio (--texts)")
    p.add_argument("queries", nargs="+", help="text queries with --index; audio inputs with --texts")
    p.add_argument("--model", default=None, help="the CLAP or SLAP model folder that made the index")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--index", help="embeddings written by `pengi embed` (NAME.safetensors, sharded or not) "
                                                   "to search with text queries")
    source.add_argument("--texts", help="a text file, one candidate text per line, to search with audio queries")
    p.add_argument("--top-k", type=positive_int, default=10, help="matches per query (default: 10)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="audio queries per batch (default: 32)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """One JSON line per query: ``{"query", "matches": [...]}``, best first."""
    if args.index:
        index = open_index(args.index)
        model = load_contrastive(args)
        if index.model and args.model and index.model != model_name(args):
            log.warning("%s was made with %s, not %s", args.index, index.model, os.path.abspath(args.model))
        for query, matches in zip(args.queries, index.search(model.embed_text(args.queries), args.top_k)):
            print(json.dumps({"query": query, "matches": matches}, ensure_ascii=False))
        return 0
    texts = list(dict.fromkeys(read_lines(args.texts)))
    jobs = unique_jobs(args.queries)
    model = load_contrastive(args)
    text_embeds = model.embed_text(texts).float().cpu()
    failed = 0
    for loaded in prefetched(jobs, args.batch_size, lambda job: load_clip(model.processor, job)):
        for job, emb in embed_batch(model, loaded):
            if isinstance(emb, PengiInputError):
                failed += report_errors([(job, emb)])
                continue
            matches = top_matches(emb[None], text_embeds, texts, args.top_k, key="text")[0]
            print(json.dumps({"query": job.audio, "matches": matches}, ensure_ascii=False))
    return 1 if failed else 0
