"""The CLAP commands of `pengi`: zero-shot classification, embedding extraction and retrieval.

They read inputs as `pengi caption` does (files, folders, globs, manifests; `pengi.batch_io`), decode the next
batch while the model runs, and report a bad file without stopping. pengi ships no CLAP model: ``--model`` names
a folder written by ``CLAP.save_pretrained`` (e.g. recipes/train_clap.py's ``final/``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from .batch_io import Job, ResultWriter, find_jobs, prefetched
from .cli import load_model
from .embedding_index import EmbeddingIndex, top_matches
from .errors import PengiInputError
from .modeling_clap import CLAP, DEFAULT_TEMPLATE, TEMPLATES

log = logging.getLogger("pengi")
ZERO_SHOT_FIELDS = ["audio", "prompt", "label", "score", "labels", "scores", "label_set", "error"]
SAVE_EVERY_S = 60.0  # `pengi embed` rewrites its output this often, so that a killed run loses little


def read_lines(path: str) -> list[str]:
    """The non-blank lines of a text file (labels, or texts to search), stripped."""
    if not os.path.isfile(path):
        raise PengiInputError(path, "file not found")
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    if not lines:
        raise PengiInputError(path, "has no non-blank lines")
    return lines


def embedded(model: CLAP, jobs: list[Job], args: argparse.Namespace, desc: str
             ) -> Iterator[list[tuple[Job, torch.Tensor | PengiInputError]]]:
    """Each batch of ``jobs`` with each clip's L2-normalised embedding (float32, CPU), or the error that kept
    its audio from loading (also printed); a progress bar counts the clips."""
    proc = model._require_processor()

    def load(batch: list[Job]) -> list[tuple[Job, torch.Tensor | PengiInputError]]:
        loaded: list[tuple[Job, torch.Tensor | PengiInputError]] = []
        for job in batch:
            try:
                loaded.append((job, proc.clip(proc.load(job.audio))))
            except PengiInputError as err:
                loaded.append((job, err))
        return loaded

    bar = tqdm(total=len(jobs), unit="clip", desc=desc, disable=args.quiet)
    for loaded in prefetched(jobs, args.batch_size, load):
        waves = [item for _, item in loaded if isinstance(item, torch.Tensor)]
        with torch.inference_mode():
            embeds = iter(model.audio_embedding(torch.stack(waves)).float().cpu() if waves else [])
        out: list[tuple[Job, torch.Tensor | PengiInputError]] = []
        for job, item in loaded:
            if isinstance(item, PengiInputError):
                tqdm.write(f"error: {item}", file=sys.stderr)
                out.append((job, item))
            else:
                out.append((job, next(embeds)))
        yield out
        bar.update(len(loaded))
    bar.close()


def find_audio(inputs: list[str]) -> list[Job]:
    jobs = list(dict.fromkeys(find_jobs(inputs, "")))  # a file named twice is done once
    if not jobs:
        raise PengiInputError(" ".join(inputs), "no audio files found")
    return jobs


def check_top_k(args: argparse.Namespace) -> None:
    if args.top_k < 1:
        raise PengiInputError("--top-k", f"must be at least 1, got {args.top_k}")


# ----------------------------------------------------------------------------- zero-shot
def class_labels(args: argparse.Namespace) -> list[str]:
    labels = read_lines(args.labels_file) if args.labels_file else [x.strip() for x in args.labels.split(",")]
    labels = [x for x in labels if x]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise PengiInputError(args.labels_file or "--labels", f"labels given more than once: {', '.join(repeated)}")
    return labels


def cmd_zero_shot(args: argparse.Namespace) -> int:
    check_top_k(args)
    labels = class_labels(args)
    template = TEMPLATES[args.task] if args.task else (args.template or DEFAULT_TEMPLATE)
    texts = CLAP.label_texts(labels, template)  # a bad template or an empty label list fails before the model loads
    # Results for another label set must not count as done: each row carries a digest of what it was scored on.
    label_set = hashlib.sha1(json.dumps([texts, args.multi_label]).encode()).hexdigest()[:12]
    jobs = [Job(job.audio, template) for job in find_audio(args.inputs)]
    model = load_model(args, CLAP)
    failed = 0
    with ResultWriter(args.out, ZERO_SHOT_FIELDS) as writer:
        if any(row.get("label_set") not in (None, "", label_set) for row in writer.rows):
            raise PengiInputError(args.out, "holds results for other labels, template or --multi-label; "
                                            "write to another file")
        todo = [job for job in jobs if not writer.done(job)]
        if len(todo) < len(jobs):
            log.info("%d of %d already in %s; skipping them", len(jobs) - len(todo), len(jobs), args.out)
        k = min(args.top_k, len(labels))
        for batch in embedded(model, todo, args, "classifying"):
            good = [emb for _, emb in batch if isinstance(emb, torch.Tensor)]
            probs = iter(model.zero_shot_embeddings(torch.stack(good), texts, args.multi_label).float().cpu()
                         if good else [])
            rows = []
            for job, emb in batch:
                row = {"audio": job.audio, "prompt": template, "label_set": label_set}
                if isinstance(emb, PengiInputError):
                    rows.append({**row, "error": emb.problem})
                    failed += 1
                    continue
                best = next(probs).topk(k)
                top = [labels[i] for i in best.indices.tolist()]
                scores = [round(p, 4) for p in best.values.tolist()]
                rows.append({**row, "label": top[0], "score": scores[0], "labels": top, "scores": scores})
            writer.write(rows)
    log.info("classified %d file(s), %d failed; results in %s", len(todo) - failed, failed, args.out)
    return 1 if failed else 0


# ----------------------------------------------------------------------------- embed
def cmd_embed(args: argparse.Namespace) -> int:
    if not args.out.endswith(".safetensors"):
        raise PengiInputError("--out", f"must end in .safetensors (the file names go beside it, in NAME.jsonl), "
                                       f"got {args.out!r}")
    jobs = find_audio(args.inputs)
    model = load_model(args, CLAP)
    model_id = os.path.abspath(args.model)
    index = EmbeddingIndex(model_id)
    if os.path.exists(args.out):
        index = EmbeddingIndex.load(args.out)
        if index.model != model_id:
            raise PengiInputError(args.out, f"was made with the model {index.model}, not {model_id}; "
                                            "write to another file")
    done = set(index.paths)
    todo = [job for job in jobs if job.audio not in done]
    if len(todo) < len(jobs):
        log.info("%d of %d already in %s; skipping them", len(jobs) - len(todo), len(jobs), args.out)
    failed, saved_at = 0, time.monotonic()
    for batch in embedded(model, todo, args, "embedding"):
        good = [(job.audio, emb) for job, emb in batch if isinstance(emb, torch.Tensor)]
        failed += len(batch) - len(good)
        if good:
            index.add([path for path, _ in good], torch.stack([emb for _, emb in good]))
        if time.monotonic() - saved_at > SAVE_EVERY_S and len(index):
            index.save(args.out)
            saved_at = time.monotonic()
    if len(index):
        index.save(args.out)
    log.info("embedded %d file(s), %d failed; %d embeddings in %s", len(todo) - failed, failed, len(index), args.out)
    return 1 if failed else 0


# ----------------------------------------------------------------------------- retrieve
def cmd_retrieve(args: argparse.Namespace) -> int:
    """Text to audio over a saved index, or audio to text over the lines of a file; one JSON line per query."""
    check_top_k(args)
    if args.index:
        index = EmbeddingIndex.load(args.index)
        model = load_model(args, CLAP)
        if index.model and args.model and index.model != os.path.abspath(args.model):
            log.warning("%s was made with %s, not %s", args.index, index.model, os.path.abspath(args.model))
        for query, matches in zip(args.queries, index.search(model.embed_text(args.queries), args.top_k)):
            print(json.dumps({"query": query, "matches": matches}, ensure_ascii=False))
        return 0
    texts = list(dict.fromkeys(read_lines(args.texts)))
    jobs = find_audio(args.queries)
    model = load_model(args, CLAP)
    text_embeds = model.embed_text(texts).float().cpu()
    failed = 0
    for batch in embedded(model, jobs, args, "searching"):
        for job, emb in batch:
            if isinstance(emb, PengiInputError):
                failed += 1
                continue
            matches = top_matches(emb[None], text_embeds, texts, args.top_k, key="text")[0]
            print(json.dumps({"query": job.audio, "matches": matches}, ensure_ascii=False))
    return 1 if failed else 0


# ----------------------------------------------------------------------------- the parser
def add_clap_commands(sub: argparse._SubParsersAction, runtime: argparse.ArgumentParser) -> None:
    """Register zero-shot, embed and retrieve; ``runtime`` holds --device, --dtype and --quiet."""
    common = argparse.ArgumentParser(add_help=False, parents=[runtime])
    common.add_argument("--model", default=None,
                        help="CLAP model folder (required: pengi ships no CLAP model)")
    common.add_argument("--batch-size", type=int, default=32, help="clips per batch (default: 32)")
    inputs_help = "audio files, folders, glob patterns or .jsonl/.csv manifests"

    p = sub.add_parser("zero-shot", parents=[common], help="classify audio with CLAP against any labels")
    p.add_argument("inputs", nargs="+", help=inputs_help)
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
    p.add_argument("--top-k", type=int, default=3, help="labels written per clip, best first (default: 3)")
    p.add_argument("--out", required=True, help="results file, .jsonl or .csv; re-running skips finished clips")
    p.set_defaults(func=cmd_zero_shot)

    p = sub.add_parser("embed", parents=[common], help="CLAP audio embeddings of files and folders")
    p.add_argument("inputs", nargs="+", help=inputs_help)
    p.add_argument("--out", required=True,
                   help="NAME.safetensors (the embeddings); NAME.jsonl beside it names each row's file. Re-running "
                        "adds only files not in it yet")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("retrieve", parents=[common], help="search audio with text (--index) or text with audio "
                                                          "(--texts)")
    p.add_argument("queries", nargs="+", help="text queries with --index; audio inputs with --texts")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--index", help="embeddings written by `pengi embed` to search with text queries")
    source.add_argument("--texts", help="a text file, one candidate text per line, to search with audio queries")
    p.add_argument("--top-k", type=int, default=10, help="matches per query (default: 10)")
    p.set_defaults(func=cmd_retrieve)
