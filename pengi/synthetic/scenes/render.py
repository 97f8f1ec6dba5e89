"""Waveforms for scene graphs: each event synthesised, scaled to its RMS level and added to background noise."""

from __future__ import annotations

import numpy as np

from pengi.synthetic.scenes.graph import Event, Scene

PEAK = 0.95  # the mix is scaled down as a whole (all level differences kept) if it would peak above this


def _fade(n: int, sample_rate: int, seconds: float = 0.01) -> np.ndarray:
    """A raised-cosine fade in and out, so that tones start and stop without a click."""
    k = min(int(sample_rate * seconds), n // 2)
    envelope = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(k) / k) if k else np.ones(0)
    envelope[:k], envelope[n - k:] = ramp, ramp[::-1]
    return envelope


def _pulses(n: int, sample_rate: int, rate: float, pulse: np.ndarray) -> np.ndarray:
    """``pulse`` repeated ``rate`` times a second from the first sample on, cut at ``n`` samples."""
    x = np.zeros(n)
    for start in (np.arange(0, n / sample_rate, 1 / rate) * sample_rate).astype(int):
        piece = pulse[:n - start]
        x[start:start + len(piece)] += piece
    return x


def source(event: Event, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The event's sound at unit RMS."""
    n = max(int(round(event.length * sample_rate)), 1)
    t = np.arange(n) / sample_rate
    phase = rng.uniform(0, 2 * np.pi)
    kind = event.source
    if kind == "tone":
        x = np.sin(2 * np.pi * event.freq * t + phase)
    elif kind in ("rising chirp", "falling chirp"):
        end = event.freq * (8 if kind == "rising chirp" else 1 / 8)
        freq = event.freq * (end / event.freq) ** (t / event.length)
        x = np.sin(2 * np.pi * np.cumsum(freq) / sample_rate + phase)
    elif kind == "beeping":
        x = np.sin(2 * np.pi * event.freq * t + phase) * _smooth_gate((t * event.rate) % 1 < 0.5, sample_rate)
    elif kind == "noise":
        x = rng.normal(0, 1, n)
    elif kind == "clicking":
        tp = np.arange(int(0.012 * sample_rate)) / sample_rate
        click = np.sin(2 * np.pi * event.freq * tp) * np.exp(-tp / 0.005)
        x = _pulses(n, sample_rate, event.rate, click) + 0.05 * rng.normal(0, 1, n) * _pulses(
            n, sample_rate, event.rate, np.exp(-tp / 0.002))
    elif kind == "note":
        x = sum(np.sin(2 * np.pi * event.freq * k * t + rng.uniform(0, 2 * np.pi)) / k
                for k in range(1, 7) if event.freq * k < 0.47 * sample_rate)
        attack = np.minimum(t / 0.005, 1.0)
        x = x * attack * np.exp(-2.3 * t / event.length)  # 20 dB down at the end: long notes decay slower
    elif kind == "knocking":
        tp = np.arange(int(0.12 * sample_rate)) / sample_rate
        body_freq = event.freq * (1 + np.exp(-tp / 0.02))  # the body drops an octave to ``freq``
        body = np.sin(2 * np.pi * np.cumsum(body_freq) / sample_rate) * np.exp(-tp / 0.04)
        hit = rng.normal(0, 1, len(tp)) * np.exp(-tp / 0.003) * 0.5
        x = _pulses(n, sample_rate, event.rate, body + hit)
    else:
        raise ValueError(f"unknown source {kind!r}")
    x = x * _fade(n, sample_rate)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _smooth_gate(on: np.ndarray, sample_rate: int) -> np.ndarray:
    """A 0/1 gate with 5 ms ramps, so that each beep starts and stops without a click."""
    k = int(0.005 * sample_rate)
    kernel = np.ones(k) / k
    return np.convolve(on.astype(float), kernel, mode="same")


def render(scene: Scene) -> np.ndarray:
    """The scene as float32 samples in [-1, 1]; the same scene always gives the same samples."""
    sr = scene.sample_rate
    rng = np.random.default_rng([scene.seed, 1])
    total = int(round(scene.seconds * sr))
    mix = rng.normal(0, 10 ** (scene.background_db / 20), total)
    for event in scene.events:
        x = source(event, sr, rng) * 10 ** (event.level_db / 20)
        start = int(round(event.onset * sr))
        x = x[:total - start]
        mix[start:start + len(x)] += x
    peak = np.abs(mix).max()
    if peak > PEAK:
        mix *= PEAK / peak
    return mix.astype(np.float32)
