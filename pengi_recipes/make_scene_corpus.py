"""Write the scene corpus (`pengi.synthetic.scenes`): 4 s clips of 1-4 sound events and their manifests.

    python -m pengi_recipes.make_scene_corpus --out data/scenes --train 20000 --validation 500 --test 1000

Each clip (16-bit PCM wav, 16 kHz) gets one manifest row per example: its caption(s), class label
("this is a sound of"), metadata and K questions with their `question_type`. Splits come from disjoint seed
ranges (validation from 0, test from 500,000, train from 1,000,000), so a clip's seed is its file name and
any example can be regenerated from it. `{split}.scenes.jsonl` keeps each clip's scene graph for analysis.

``--seconds MIN MAX`` gives variable-duration clips (for SLAP's long-audio training): each clip's length is
drawn uniformly from [MIN, MAX] seconds by its seed, and its 1-4 events are laid out over the whole clip.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial
from multiprocessing import Pool

import numpy as np
import soundfile as sf

from pengi.data.manifest import write_manifest
from pengi.synthetic.scenes import render, scene, tasks

SPLITS = {"train": 1_000_000, "validation": 0, "test": 500_000}  # first seed of each split
SPLIT_SEEDS = 500_000  # the most clips validation and test can have without reaching the next range


def clip_seconds(seed: int, seconds: tuple[float, float] | None) -> float | None:
    """The clip length of ``seed`` (uniform in ``seconds``, to 10 ms), or None for the corpus's fixed 4 s."""
    if seconds is None:
        return None
    return round(float(np.random.default_rng([seed, 2]).uniform(*seconds)), 2)


def make_clip(seed: int, out: str, split: str, questions: int, captions: int,
              seconds: tuple[float, float] | None = None) -> tuple[list[dict], dict]:
    """Render and write one clip; its manifest rows and scene graph."""
    length = clip_seconds(seed, seconds)
    s = scene(seed) if length is None else scene(seed, seconds=length)
    name = f"{split}/{seed}.wav"
    sf.write(os.path.join(out, name), render(s), s.sample_rate, subtype="PCM_16")
    rows = [{"audio": name, "dataset": "scenes", **row} for row in tasks(s, questions, captions)]
    return rows, s.to_dict()


def write_split(out: str, split: str, count: int, questions: int = 4, captions: int = 1, workers: int = 1,
                seconds: tuple[float, float] | None = None) -> str:
    if split != "train" and count > SPLIT_SEEDS:
        raise ValueError(f"--{split} {count}: at most {SPLIT_SEEDS} clips, or the split would reach another's seeds")
    os.makedirs(os.path.join(out, split), exist_ok=True)
    seeds = range(SPLITS[split], SPLITS[split] + count)
    job = partial(make_clip, out=out, split=split, questions=questions, captions=captions, seconds=seconds)
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
    parser.add_argument("--seconds", type=float, nargs=2, metavar=("MIN", "MAX"),
                        help="variable clip lengths, uniform in [MIN, MAX] seconds (default: all 4 s)")
    args = parser.parse_args(argv)
    lengths = tuple(args.seconds) if args.seconds else None
    if lengths and not 4.0 <= lengths[0] <= lengths[1]:
        raise SystemExit("--seconds: need 4 <= MIN <= MAX (four events need up to 4 s)")
    for split in SPLITS:
        count = getattr(args, split)
        start = time.perf_counter()
        path = write_split(args.out, split, count, args.questions_per_scene, args.captions_per_scene, args.workers,
                           lengths)
        seconds = time.perf_counter() - start
        rate = count / seconds * 60 if seconds > 0 else float("inf")
        print(f"{path}: {count} clips in {seconds:.1f} s ({rate:.0f} clips/min, {args.workers} worker(s))")


if __name__ == "__main__":
    main()
