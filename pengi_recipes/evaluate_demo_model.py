"""Proof that a model learned from the audio: held-out scores next to two controls, in one run.

    python -m pengi_recipes.evaluate_demo_model --model pengi/default_model --test data/scenes/test.jsonl \\
        --train data/scenes/train.jsonl --out runs/demo/report.json

Scores: caption metrics (BLEU-4, METEOR, ROUGE-L, CIDEr-D; COCO toolkit), QA exact-match accuracy per question
type, classification ("this is a sound of") accuracy. Controls:
- shuffled audio: the same model and prompts, each clip's audio replaced by another clip's (a fixed rotation of
  the test clips), so anything it still gets right comes from language priors, not from listening;
- majority answer: per question type, the training set's most frequent answer.
With ``--context-bound`` (for a model whose LM was pretrained with ``pretrain_lm.py --context-slots``) a third
reference: the frozen LM alone, given each clip's true metadata text where the prefixes go: what the model could
at best answer if its audio prefix said exactly what the metadata says.
Decoding is greedy. Writes the numbers as JSON and a markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter, defaultdict
from typing import Any

from pengi import Pengi
from pengi.data.manifest import load_manifest
from pengi.evaluation import load_metric
from pengi_recipes.pretrain_lm import context_report

CAPTION_SCORES = ("BLEU_4", "METEOR", "ROUGE_L", "CIDEr-D")


def predict(model: Pengi, rows: list[dict], audio_of: dict[str, str], batch_size: int) -> list[str]:
    return model.generate([audio_of[r["audio"]] for r in rows], [r["prompt"] for r in rows], num_beams=1,
                          batch_size=batch_size)


def score(rows: list[dict], preds: list[str], qa_metric, caption_metric) -> dict[str, Any]:
    out: dict[str, Any] = {}
    caps = [(p, r["answer"]) for r, p in zip(rows, preds) if r["task"] == "caption"]
    if caps and caption_metric is not None:
        coco = caption_metric.compute(predictions=[p for p, _ in caps], references=[[t] for _, t in caps],
                                      spice=False)
        out["caption"] = {k: coco[k] for k in CAPTION_SCORES if k in coco}
    qa = [(p, r) for r, p in zip(rows, preds) if r["task"] == "aqa"]
    if qa:
        result = qa_metric.compute(predictions=[p for p, _ in qa], references=[[r["answer"]] for _, r in qa],
                                   question_types=[r["question_type"] or "other" for _, r in qa])
        out["qa"] = {"accuracy": result["accuracy"], **{t: v["accuracy"] for t, v in result["per_type"].items()}}
    cls = [(p, r["answer"]) for r, p in zip(rows, preds) if r["task"] == "sound_event"]
    if cls:
        out["classification_accuracy"] = sum(p.strip().lower() == t.strip().lower() for p, t in cls) / len(cls)
    return out


def majority_control(train: list[dict], test: list[dict], qa_metric) -> dict[str, Any]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in train:
        if r["task"] == "aqa":
            counts[r["question_type"] or "other"][r["answer"]] += 1
    qa = [r for r in test if r["task"] == "aqa"]
    guesses = [counts[r["question_type"] or "other"].most_common(1)[0][0] if counts[r["question_type"] or "other"]
               else "" for r in qa]
    result = qa_metric.compute(predictions=guesses, references=[[r["answer"]] for r in qa],
                               question_types=[r["question_type"] or "other" for r in qa])
    return {"qa": {"accuracy": result["accuracy"], **{t: v["accuracy"] for t, v in result["per_type"].items()}}}


def context_bound(model: Pengi, test: list[dict], batch_size: int) -> dict[str, Any]:
    """QA accuracy of the model's frozen LM reading each clip's metadata where the audio prefix goes, laid out as
    `pretrain_lm.py --context-slots` trained it: an upper bound for the audio path."""
    cfg = model.config
    layout = dict(context_slots=cfg.audio_prefix_length, text_slots=cfg.text_prefix_length,
                  prompt_length=cfg.prompt_max_length)
    return {"qa": context_report(model.lm, model.processor.tokenizer, test, "metadata", layout, batch_size)}


def evaluate_model(model: Pengi, test: list[dict], train: list[dict], batch_size: int = 64,
                   caption_metrics: bool = True) -> dict[str, Any]:
    qa_metric = load_metric("audio_qa")
    caption_metric = load_metric("caption_metrics") if caption_metrics else None
    clips = sorted({r["audio"] for r in test})
    rotated = dict(zip(clips, clips[1:] + clips[:1]))  # every clip gets a different clip's audio
    return {
        "model": score(test, predict(model, test, {c: c for c in clips}, batch_size), qa_metric, caption_metric),
        "shuffled_audio": score(test, predict(model, test, rotated, batch_size), qa_metric, caption_metric),
        "majority_answer": majority_control(train, test, qa_metric),
        "num_clips": len(clips), "num_rows": len(test),
    }


def markdown(report: dict[str, Any]) -> str:
    runs = ("model", "shuffled_audio", "majority_answer") + (("context_bound",) if "context_bound" in report else ())
    keys: list[tuple[str, str]] = []
    for run in runs:
        for group, values in report[run].items():
            for k in values if isinstance(values, dict) else [None]:
                if (group, k) not in keys:
                    keys.append((group, k))
    titles = {"model": "model", "shuffled_audio": "shuffled audio", "majority_answer": "majority answer",
              "context_bound": "LM given the true metadata"}
    lines = ["| score | " + " | ".join(titles[r] for r in runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for group, k in keys:
        cells = []
        for run in runs:
            value = report[run].get(group)
            value = value.get(k) if isinstance(value, dict) else value
            cells.append("—" if value is None else f"{value:.3f}")
        lines.append(f"| {group}{'' if k is None else ' ' + k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the model shipped with pengi)")
    parser.add_argument("--test", required=True)
    parser.add_argument("--train", required=True, help="training manifest, for the majority-answer control")
    parser.add_argument("--out", required=True, help="report .json (a .md table is written beside it)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N clips only")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-caption-metrics", action="store_true", help="skip the COCO metrics (they need Java)")
    parser.add_argument("--context-bound", action="store_true",
                        help="also score the frozen LM reading each clip's true metadata (see above)")
    args = parser.parse_args(argv)
    test = list(load_manifest(args.test))
    if args.limit:
        keep = set(sorted({r["audio"] for r in test})[: args.limit])
        test = [r for r in test if r["audio"] in keep]
    model = Pengi.from_pretrained(args.model).to(args.device).eval()
    report = evaluate_model(model, test, list(load_manifest(args.train)), args.batch_size,
                            caption_metrics=not args.no_caption_metrics)
    if args.context_bound:
        report["context_bound"] = context_bound(model, test, args.batch_size)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    table = markdown(report)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
