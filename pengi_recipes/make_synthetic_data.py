"""Write synthetic clips (`pengi.synthetic`) and their manifests, for the pengi-tiny recipe and the tests.

    python -m pengi_recipes.make_synthetic_data --out data/synthetic --train 2000 --validation 200

Each clip gets one manifest row per task (caption, class, metadata, two questions). Training and
validation clips come from disjoint seed ranges.
"""

from __future__ import annotations

import argparse
import os

import soundfile as sf

from pengi.data.manifest import write_manifest
from pengi.synthetic import example

SPLITS = {"train": 1_000_000, "validation": 0}  # first seed of each split


def write_split(out: str, split: str, count: int) -> str:
    folder = os.path.join(out, split)
    os.makedirs(folder, exist_ok=True)
    rows = []
    for seed in range(SPLITS[split], SPLITS[split] + count):
        e = example(seed)
        name = f"{split}/{seed}.wav"
        sf.write(os.path.join(out, name), e.audio, e.sample_rate, subtype="PCM_16")
        rows += [{"audio": name, "task": task, "prompt": p, "answer": a, "dataset": "synthetic",
                  "question_type": "yes/no" if task == "aqa" else None} for task, p, a in e.tasks()]
    path = os.path.join(out, f"{split}.jsonl")
    write_manifest(rows, path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/synthetic")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--validation", type=int, default=200)
    args = parser.parse_args(argv)
    for split in SPLITS:
        print(write_split(args.out, split, getattr(args, split)))


if __name__ == "__main__":
    main()
