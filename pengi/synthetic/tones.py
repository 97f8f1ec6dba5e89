"""Seeded synthetic sounds with known attributes, and the texts that describe them.

Each example is one sound source (a tone, a chirp, noise, clicks, beeps or a plucked note) at a loud or
quiet level over faint background noise, with a caption, a class label, metadata and question/answer
pairs computed from those attributes. The same seed always gives the same audio and texts, so models
trained on it can be checked on held-out seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pengi.data.tasks import prompt_for

SOURCES = {
    "low tone": "a steady low tone",
    "high tone": "a steady high pitched tone",
    "rising chirp": "a tone rising in pitch",
    "falling chirp": "a tone falling in pitch",
    "noise": "a burst of static noise",
    "clicks": "a series of sharp clicks",
    "beeps": "a few short beeps",
    "plucked note": "a plucked musical note",
}
TONAL = {"low tone", "high tone", "rising chirp", "falling chirp", "beeps", "plucked note"}
QUESTIONS = {prompt_for("aqa", question="is this sound tonal?"): "tonal",
             prompt_for("aqa", question="is the sound loud?"): "loud"}


@dataclass(frozen=True)
class Example:
    audio: np.ndarray
    sample_rate: int
    source: str
    loud: bool

    @property
    def caption(self) -> str:
        return f"{'a loud' if self.loud else 'a quiet'} {SOURCES[self.source].removeprefix('a ')}"

    @property
    def metadata(self) -> str:
        return f"{'loud' if self.loud else 'quiet'}, {self.source}"

    def answer(self, question: str) -> str:
        attribute = QUESTIONS[question]
        truth = self.source in TONAL if attribute == "tonal" else self.loud
        return "yes" if truth else "no"

    def tasks(self) -> list[tuple[str, str, str]]:
        """(task, prompt, answer) for this example, with Pengi's prompts (`pengi.data.tasks`)."""
        rows = [("caption", self.caption), ("sound_event", self.source), ("metadata", self.metadata)]
        return [(task, prompt_for(task), answer) for task, answer in rows] + [("aqa", q, self.answer(q))
                                                                               for q in QUESTIONS]


def render(source: str, loud: bool, rng: np.random.Generator, sample_rate: int = 16000,
           seconds: float = 1.0) -> np.ndarray:
    """One clip of ``source`` as float32 samples in [-1, 1]."""
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    if source == "low tone":
        x = np.sin(2 * np.pi * rng.uniform(150, 350) * t)
    elif source == "high tone":
        x = np.sin(2 * np.pi * rng.uniform(1500, 3000) * t)
    elif source in ("rising chirp", "falling chirp"):
        lo, hi = rng.uniform(200, 400), rng.uniform(2000, 3500)
        f0, f1 = (lo, hi) if source == "rising chirp" else (hi, lo)
        freq = f0 * (f1 / f0) ** (t / seconds)
        x = np.sin(2 * np.pi * np.cumsum(freq) / sample_rate)
    elif source == "noise":
        x = rng.uniform(-1, 1, n)
    elif source == "clicks":
        x = np.zeros(n)
        period = int(sample_rate / rng.uniform(5, 10))
        click = np.hanning(80)[40:]
        for start in range(int(rng.integers(0, period)), n - len(click), period):
            x[start:start + len(click)] = click * rng.choice([-1, 1])
    elif source == "beeps":
        f = rng.uniform(800, 1200)
        gate = (np.floor(t * rng.uniform(3, 5) * 2) % 2 == 0).astype(float)
        x = np.sin(2 * np.pi * f * t) * gate
    elif source == "plucked note":
        f = rng.uniform(200, 600)
        x = sum(np.sin(2 * np.pi * f * k * t) / k for k in range(1, 5)) * np.exp(-t * rng.uniform(3, 6))
    else:
        raise ValueError(f"unknown source {source!r}; one of {sorted(SOURCES)}")
    x = x / (np.abs(x).max() + 1e-9)
    level = rng.uniform(0.5, 0.9) if loud else rng.uniform(0.01, 0.05)
    background = rng.normal(0, 0.003, n)
    return (level * x + background).astype(np.float32)


def example(seed: int, sample_rate: int = 16000, seconds: float = 1.0) -> Example:
    """The example for ``seed``: source and loudness cycle so that every block of 16 seeds is balanced."""
    rng = np.random.default_rng(seed)
    names = sorted(SOURCES)
    source, loud = names[seed % len(names)], bool((seed // len(names)) % 2)
    return Example(render(source, loud, rng, sample_rate, seconds), sample_rate, source, loud)
