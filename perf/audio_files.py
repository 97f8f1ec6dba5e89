"""A folder of real audio files as users have them: mixed formats, sample rates, channel counts and lengths.

The benchmarks that read files (`perf.caption_files`, `perf.recipe_throughput`) write their clips with
`write_clips`: the synthetic scenes of `pengi.synthetic` rendered at the file's own rate, so each file has a
known caption and answers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from pengi.synthetic import example
from pengi.synthetic.tones import Example

# (extension, sample rate, channels, soundfile subtype): the formats cycle over the clips.
FORMATS = [
    ("wav", 16000, 1, "PCM_16"),
    ("wav", 44100, 2, "PCM_16"),
    ("wav", 48000, 1, "FLOAT"),
    ("flac", 44100, 1, "PCM_16"),
    ("flac", 48000, 2, "PCM_24"),
    ("ogg", 44100, 1, "VORBIS"),
    ("ogg", 22050, 2, "VORBIS"),
]


@dataclass(frozen=True)
class Clip:
    path: str
    example: Example


def write_clips(folder: str, count: int, min_seconds: float = 3.0, max_seconds: float = 10.0,
                seed: int = 0) -> list[Clip]:
    """Write ``count`` clips of ``min_seconds`` to ``max_seconds`` into ``folder``, cycling over `FORMATS`."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(count):
        ext, rate, channels, subtype = FORMATS[i % len(FORMATS)]
        e = example(seed * 1_000_000 + i, sample_rate=rate, seconds=float(rng.uniform(min_seconds, max_seconds)))
        audio = np.stack([e.audio] * channels, axis=1) if channels > 1 else e.audio
        path = os.path.join(folder, f"clip{i:05d}_{rate}.{ext}")
        sf.write(path, audio, rate, subtype=subtype, format="OGG" if ext == "ogg" else None)
        clips.append(Clip(path, e))
    return clips


def describe_formats(clips: list[Clip]) -> str:
    counts: dict[str, int] = {}
    for clip in clips:
        key = os.path.splitext(clip.path)[1][1:] + " " + clip.path.rsplit("_", 1)[1].split(".")[0]
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {key} Hz" for key, n in sorted(counts.items()))
