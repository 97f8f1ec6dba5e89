"""`pengi zero-shot`: classify audio against any labels with a contrastive model (CLAP, SLAP), resumably."""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
from typing import Any

import torch

from pengi.batch.embedding import embed_batch, load_clip
from pengi.batch.inputs import Job
from pengi.batch.local import run_local
from pengi.batch.results import ResultWriter
from pengi.cli.common import (
    batch_options,
    decode_workers,
    load_contrastive,
    positive_int,
    read_lines,
    runtime_options,
    unique_jobs,
)
from pengi.errors import PengiInputError
from pengi.models.contrastive import DEFAULT_TEMPLATE, TEMPLATES, ContrastiveMixin

log = logging.getLogger("pengi")
FIELDS = ["audio", "prompt", "label", "score", "labels", "scores", "label_set", "error"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zero-shot", parents=[batch_options("results"), runtime_options()],
                       help="classify audio with a CLAP (or SLAP) model against any labels")
    p.add_argument("--model", default=None, help="CLAP or SLAP model folder (required: pengi ships none)")
    labels = p.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help="comma-separated class labels, e.g. dog,cat,rain")
    labels.add_argument("--labels-file", help="a text file with one class label per line")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--template", help=f"text made from each label (default: {DEFAULT_TEMPLATE!r})")
    text.add_argument("--task", choices=sorted(TEMPLATES),
                      help="the CLAP paper's template for this task: " +
                           "; ".join(f"{k}: {v!r}" for k, v in TEMPLATES.items()))
    p.add_argument("--multi-label", action="store_true",
                   help="independent sigmoid scores per label (default: softmax over the labels)")
    p.add_argument("--top-k", type=positive_int, default=3, help="labels written per clip, best first (default: 3)")
    p.set_defaults(func=run, batch_size=32)


def class_labels(args: argparse.Namespace) -> list[str]:
    labels = read_lines(args.labels_file) if args.labels_file else [x.strip() for x in args.labels.split(",")]
    labels = [x for x in labels if x]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise PengiInputError(args.labels_file or "--labels", f"labels given more than once: {', '.join(repeated)}")
    return labels


def classify(model: ContrastiveMixin, loaded: list[tuple[Job, Any]], labels: list[str], texts: list[str],
             multi_label: bool, top_k: int, label_set: str) -> list[dict[str, Any]]:
    embedded = embed_batch(model, loaded)
    good = [e for _, e in embedded if isinstance(e, torch.Tensor)]
    probs = iter(model.zero_shot_embeddings(torch.stack(good), texts, multi_label).float().cpu() if good else [])
    rows = []
    for job, emb in embedded:
        row = {"audio": job.audio, "prompt": job.prompt, "label_set": label_set}
        if isinstance(emb, PengiInputError):
            rows.append({**row, "error": emb.problem})
            continue
        best = next(probs).topk(min(top_k, len(labels)))
        top = [labels[i] for i in best.indices.tolist()]
        scores = [round(p, 4) for p in best.values.tolist()]
        rows.append({**row, "label": top[0], "score": scores[0], "labels": top, "scores": scores})
    return rows


def run(args: argparse.Namespace) -> int:
    labels = class_labels(args)
    template = TEMPLATES[args.task] if args.task else (args.template or DEFAULT_TEMPLATE)
    texts = ContrastiveMixin.label_texts(labels, template)  # a bad template or no labels fail before the model loads
    # Results for another label set must not count as done: each row carries a digest of what it was scored on.
    label_set = hashlib.sha1(json.dumps([texts, args.multi_label]).encode()).hexdigest()[:12]
    jobs = [Job(job.audio, template) for job in unique_jobs(args.inputs)]
    model = load_contrastive(args)
    with ResultWriter(args.out, FIELDS) as writer:
        if any(row.get("label_set") not in (None, "", label_set) for row in writer.rows):
            raise PengiInputError(args.out, "holds results for other labels, template or --multi-label; "
                                            "write to another file")
        report = run_local(jobs, writer, functools.partial(load_clip, model.processor),
                           lambda batch: classify(model, batch, labels, texts, args.multi_label, args.top_k,
                                                  label_set),
                           output=args.out, batch_size=args.batch_size,
                           decode_workers=decode_workers(args, model.device), decode_processes=args.decode_processes,
                           desc="classifying", quiet=args.quiet)
    where = "" if args.out == "-" else f"; results in {os.path.abspath(args.out)}"
    log.info("classified %d file(s), %d failed%s", report.done, report.failed, where)
    return 1 if report.failed else 0
