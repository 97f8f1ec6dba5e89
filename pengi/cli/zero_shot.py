"""`pengi zero-shot`: classify audio against any labels with a contrastive model (CLAP, SLAP), resumably."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from functools import partial
from typing import Any

import torch

from pengi.batch.embedding import embed_batch, load_clip
from pengi.batch.engine import BatchWork, run_batch
from pengi.batch.inputs import Job
from pengi.batch.parquet import open_results
from pengi.cli.common import (
    batch_options,
    engine_options,
    model_source,
    positive_int,
    read_lines,
    runtime_options,
    select_jobs,
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
    jobs = [Job(job.audio, template) for job in select_jobs(args)]  # renames --out for a --shard
    options = engine_options(args)
    source = model_source(args, "contrastive")

    def open_writer():
        writer = open_results(args.out, FIELDS)
        if any(row.get("label_set") not in (None, "", label_set) for row in writer.rows):
            writer.close()
            raise PengiInputError(args.out, "holds results for other labels, template or --multi-label; "
                                            "write to another file")
        return writer

    process = partial(classify, labels=labels, texts=texts, multi_label=args.multi_label, top_k=args.top_k,
                      label_set=label_set)
    report = run_batch(BatchWork(source, load_clip, process, desc="classifying"), jobs, open_writer, options)
    where = "" if args.out == "-" else f"; results in {os.path.abspath(args.out)}"
    log.info("classified %d file(s), %d failed%s", report.done, report.failed, where)
    return 1 if report.failed else 0
