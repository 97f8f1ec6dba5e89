"""How much of a SLAP batch is real audio: random batching vs duration buckets vs sequence packing.

    python -m perf.slap_padding                                   # a mixed-corpus duration distribution
    python -m perf.slap_padding --manifest data/scenes-var/train.jsonl --tasks caption

A clip of ``s`` seconds is ``ceil((s * sr // hop + 1) / patch_frames) * bands`` tokens for the SLAP tower
(`SlapAudioConfig` defaults: 16 kHz, 10 ms hop, 16x16 patches over 64 mel bins). For each strategy the script
counts, over one epoch of batches of ``--batch-size`` clips:

* token efficiency: real tokens / token slots the transformer processes (padding included), and
* attention efficiency: real attention pairs (``sum n_i^2``) / pairs computed (``rows * L^2``; packed rows use
  a dense block-diagonal mask, so they pay for the pairs across clips too).

Strategies: ``random`` (shuffled batches, padded to the longest clip: the baseline), ``bucketed``
(`DurationBucketBatchSampler`), ``packed`` (random batches, clips packed first-fit-decreasing into rows of
``max_seconds`` worth of tokens) and ``bucketed+packed``.
"""

from __future__ import annotations

import argparse
import math
import random

import numpy as np

from pengi.data.sampling import DurationBucketBatchSampler
from pengi.modules.slap_tower import SlapAudioConfig, pack_rows


def mixed_durations(n: int, seed: int = 0) -> list[float]:
    """A stand-in for a caption-corpus mixture (no corpus is downloadable here), in seconds, capped at 30:
    40 % AudioCaps-like (10 s, one in ten shorter), 20 % Clotho-like (15-30 s), 30 % WavCaps-like long tail
    (log-normal, median 8 s), 10 % ESC-50-like (5 s)."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(4, size=n, p=[0.4, 0.2, 0.3, 0.1])
    out = np.where(rng.random(n) < 0.9, 10.0, rng.uniform(2, 10, n))
    out = np.where(kinds == 1, rng.uniform(15, 30, n), out)
    out = np.where(kinds == 2, np.clip(rng.lognormal(math.log(8), 0.9, n), 0.5, 30), out)
    out = np.where(kinds == 3, 5.0, out)
    return [float(x) for x in out]


def tokens(seconds: float, config: SlapAudioConfig, sample_rate: int = 16000, hop: int = 160) -> int:
    frames = int(round(min(seconds, config.max_seconds) * sample_rate)) // hop + 1
    return math.ceil(frames / config.patch_frames) * config.num_bands


def padded_cost(batches: list[list[int]], n: list[int]) -> tuple[int, int]:
    """Token slots and attention pairs of batches padded to their longest clip."""
    slots = sum(len(b) * max(n[i] for i in b) for b in batches)
    pairs = sum(len(b) * max(n[i] for i in b) ** 2 for b in batches)
    return slots, pairs


def packed_cost(batches: list[list[int]], n: list[int], capacity: int) -> tuple[int, int]:
    """Token slots and attention pairs of batches packed into rows of ``capacity`` tokens."""
    slots = pairs = 0
    for b in batches:
        rows = 1 + max(r for r, _ in pack_rows([n[i] for i in b], capacity))
        slots += rows * capacity
        pairs += rows * capacity ** 2
    return slots, pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", help="measure this manifest's durations instead of the mixed distribution")
    parser.add_argument("--tasks", nargs="*", default=None, help="only rows of these tasks (e.g. caption)")
    parser.add_argument("--clips", type=int, default=20000, help="clips drawn from the mixed distribution")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bucket-batches", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    config = SlapAudioConfig()
    if args.manifest:
        from pengi.data.manifest import load_manifest
        from pengi.data.sampling import durations

        rows = load_manifest(args.manifest)
        if args.tasks:
            rows = rows.filter(lambda r: r["task"] in args.tasks)
        seconds = durations(rows)
        source = args.manifest
    else:
        seconds = mixed_durations(args.clips, args.seed)
        source = f"mixed distribution, {args.clips} clips"
    n = [tokens(s, config) for s in seconds]
    capacity = tokens(config.max_seconds, config)

    order = list(range(len(n)))
    random.Random(args.seed).shuffle(order)
    b = args.batch_size
    random_batches = [order[i:i + b] for i in range(0, len(order) - b + 1, b)]
    bucketed = list(DurationBucketBatchSampler(seconds, b, seed=args.seed, bucket_batches=args.bucket_batches,
                                               drop_last=True))
    plans = {"random": (random_batches, padded_cost(random_batches, n)),
             "bucketed": (bucketed, padded_cost(bucketed, n)),
             "packed": (random_batches, packed_cost(random_batches, n, capacity)),
             "bucketed+packed": (bucketed, packed_cost(bucketed, n, capacity))}

    print(f"{source}: {len(n)} clips, {np.mean(seconds):.1f} s mean ({np.min(seconds):.1f}-{np.max(seconds):.1f}), "
          f"batch {b}, rows of {capacity} tokens ({config.max_seconds:g} s) when packing")
    print(f"{'strategy':<18}{'token eff.':>11}{'vs random':>11}{'attn eff.':>11}{'vs random':>11}")
    base = None
    for name, (batches, (slots, pairs)) in plans.items():
        clips = [i for batch in batches for i in batch]  # epochs drop different partial last batches
        tok = sum(n[i] for i in clips) / slots
        att = sum(n[i] ** 2 for i in clips) / pairs
        base = base or (tok, att)
        print(f"{name:<18}{tok:>11.3f}{tok / base[0]:>10.2f}x{att:>11.3f}{att / base[1]:>10.2f}x")

if __name__ == "__main__":
    main()
