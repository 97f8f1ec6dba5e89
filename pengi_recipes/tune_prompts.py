"""Audio-free prompt tuning of a frozen CLAP, and its report: vanilla zero-shot vs tuned, on seen and unseen classes.

    python -m pengi_recipes.tune_prompts --clap runs/clap/final --train data/scenes/train.jsonl \\
        --test data/scenes/test.jsonl --seen beeping clicking noise tone --out runs/prompts

Training uses text only: the captions of training clips whose label (the manifest's ``sound_event`` answer) is a
single seen class, or with ``--class-names-only`` just the seen class names. The test clips are those with a
single label: each is classified among the seen or the unseen classes (the other labels of the manifest), by
vanilla zero-shot ("This is a sound of {label}") and by the tuned prompts. Writes ``prompts/`` (the tuned prompts),
``report.json`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

import torch

from pengi import CLAP
from pengi.data.manifest import load_manifest
from pengi.models.clap.prompt_tuning import PromptTuner


def single_label_clips(manifest: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``{audio: label}`` for clips with exactly one class label, and ``{audio: [captions]}`` for every clip."""
    labels, captions = {}, defaultdict(list)
    for row in load_manifest(manifest):
        if row["task"] == "sound_event":
            names = [x.strip() for x in row["answer"].split(",")]
            if len(names) == 1:
                labels[row["audio"]] = names[0]
        elif row["task"] == "caption":
            captions[row["audio"]].append(row["answer"])
    return labels, captions


def accuracy(probs: torch.Tensor, targets: list[int]) -> float:
    return (probs.argmax(dim=-1).cpu() == torch.tensor(targets)).float().mean().item() if targets else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clap", required=True, help="CLAP model folder")
    parser.add_argument("--train", required=True, help="manifest whose captions (text only) train the prompts")
    parser.add_argument("--test", required=True, help="manifest of held-out clips with sound_event labels")
    parser.add_argument("--seen", nargs="+", required=True, help="the classes tuned on; the rest are unseen")
    parser.add_argument("--out", required=True)
    parser.add_argument("--class-names-only", action="store_true", help="train on the class names alone")
    parser.add_argument("--no-local", action="store_true", help="global prompts only")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-test", type=int, default=None, help="test on at most this many clips per group")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    clap = CLAP.from_pretrained(args.clap).to(args.device).eval()
    train_labels, train_captions = single_label_clips(args.train)
    test_labels, _ = single_label_clips(args.test)
    seen = sorted(args.seen)
    unseen = sorted(set(test_labels.values()) - set(seen))
    if not unseen:
        raise SystemExit("every test label is in --seen: nothing is left to test unseen classes on")
    if args.class_names_only:
        texts, targets = seen, list(range(len(seen)))
    else:
        pairs = [(c, seen.index(label)) for audio, label in train_labels.items() if label in seen
                 for c in train_captions[audio]]
        texts, targets = [p[0] for p in pairs], [p[1] for p in pairs]
    torch.manual_seed(0)
    tuner = PromptTuner(clap, local=not args.no_local)
    history = tuner.fit(texts, targets, seen, epochs=args.epochs, lr=args.lr)
    tuner.save(os.path.join(args.out, "prompts"))

    report = {"clap": args.clap, "seen": seen, "unseen": unseen, "train_texts": len(texts),
              "class_names_only": args.class_names_only, "local": tuner.local, "epochs": args.epochs,
              "loss_first_epoch": history[0], "loss_last_epoch": history[-1], "groups": {}}
    for group, classes in (("seen", seen), ("unseen", unseen)):
        clips = [(audio, classes.index(label)) for audio, label in sorted(test_labels.items()) if label in classes]
        clips = clips[:args.max_test] if args.max_test else clips
        audio, targets = [c[0] for c in clips], [c[1] for c in clips]
        vanilla = clap.zero_shot(audio, classes)
        tuned = tuner.classify(audio, classes)
        report["groups"][group] = {"clips": len(clips), "chance": 1 / len(classes),
                                   "vanilla_zero_shot": accuracy(vanilla, targets),
                                   "prompt_tuned": accuracy(tuned, targets)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    lines = ["| classes | clips | chance | vanilla zero-shot | prompt-tuned |", "|---|---|---|---|---|"]
    for group, r in report["groups"].items():
        lines.append(f"| {group} ({', '.join(report[group])}) | {r['clips']} | {r['chance']:.3f} | "
                     f"{r['vanilla_zero_shot']:.3f} | {r['prompt_tuned']:.3f} |")
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
