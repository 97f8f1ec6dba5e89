"""Write the scene corpus (`pengi.scenes`): 4 s clips of 1-4 sound events and their manifests.

    python recipes/make_scene_corpus.py --out data/scenes --train 20000 --validation 500 --test 1000

Each clip (16-bit PCM wav, 16 kHz) gets one manifest row per example: its caption(s), class label
("this is a sound of"), metadata and K questions with their `question_type`. Splits come from disjoint seed
ranges (validation from 0, test from 500,000, train from 1,000,000), so a clip's seed is its file name and
any example can be regenerated from it. `{split}.scenes.jsonl` keeps each clip's scene graph for analysis.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial
from multiprocessing import Pool

import soundfile as sf

from pengi.data.manifest import write_manifest
from pengi.scenes import render, scene, tasks

SPLITS = {"train": 1_000_000, "validation": 0, "test": 500_000}  # first seed of each split
SPLIT_SEEDS = 500_000  # the most clips validation and test can have without reaching the next range


def make_clip(seed: int, out: str, split: str, questions: int, captions: int) -> tuple[list[dict], dict]:
    """Render and write one clip; its manifest rows and scene graph."""
    s = scene(seed)
    name = f"{split}/{seed}.wav"
    sf.write(os.path.join(out, name), render(s), s.sample_rate, subtype="PCM_16")
    rows = [{"audio": name, "dataset": "scenes", **row} for row in tasks(s, questions, captions)]
    return rows, s.to_dict()


def write_split(out: str, split: str, count: int, questions: int = 4, captions: int = 1, workers: int = 1) -> str:
    if split != "train" and count > SPLIT_SEEDS:
        raise ValueError(f"--{split} {count}: at most {SPLIT_SEEDS} clips, or the split would reach another's seeds")
    os.makedirs(os.path.join(out, split), exist_ok=True)
    seeds = range(SPLITS[split], SPLITS[split] + count)
    job = partial(make_clip, out=out, split=split, questions=questions, captions=captions)
    if workers > 1:
        with Pool(workers) as pool:
            results = pool.map(job, seeds, chunksize=64)
    else:
        results = [job(seed) for seed in seeds]
    path = os.path.join(out, f"{split}.jsonl")
    write_manifest((row for rows, _ in results for row in rows), path)
    with open(os.path.join(out, f"{split}.scenes.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(graph) + "\n" for _, graph in results)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/scenes")
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--validation", type=int, default=500)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--questions-per-scene", type=int, default=4)
    parser.add_argument("--captions-per-scene", type=int, default=1,
                        help="distinct captions per clip (more give more references for caption metrics)")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering clips")
    args = parser.parse_args(argv)
    for split in SPLITS:
        count = getattr(args, split)
        start = time.perf_counter()
        path = write_split(args.out, split, count, args.questions_per_scene, args.captions_per_scene, args.workers)
        seconds = time.perf_counter() - start
        rate = count / seconds * 60 if seconds > 0 else float("inf")
        print(f"{path}: {count} clips in {seconds:.1f} s ({rate:.0f} clips/min, {args.workers} worker(s))")


if __name__ == "__main__":
    main()
