"""The scene graph: which sound events a clip holds, their attributes and where they sit in time.

Every attribute is drawn from a few well-separated classes (loud/quiet 16 dB apart or more, short/long nearly
a factor of two apart, low/high pitch more than an octave apart) so that a small audio encoder can learn them
from log-mel spectrograms, and texts computed from the graph are true of the audio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SAMPLE_RATE = 16000
SECONDS = 4.0
MAX_EVENTS = 4

# Class labels of the sound sources, also the answers to "what is the first sound?".
TYPES = ("tone", "rising chirp", "falling chirp", "beeping", "noise", "clicking", "note", "knocking")
PITCHED = frozenset({"tone", "beeping", "note"})  # the types that are asked about as high or low

SHORT_S, LONG_S = (0.4, 0.6), (0.9, 1.3)
LOUD_DB, QUIET_DB = (-22.0, -16.0), (-44.0, -38.0)  # RMS over the event, dB re full scale
# Impulsive trains have high peaks for their RMS: they sit lower so that loud ones do not clip (a loud click
# train is still 11 dB above any quiet event, and 16 dB above a quiet one of its own type; a quiet one is 13 dB
# above the background, and its clicks much more).
LEVEL_OFFSET_DB = {"clicking": -5.0, "knocking": -3.0}
BACKGROUND_DB = (-68.0, -62.0)  # white noise over the whole clip
LOW_HZ, HIGH_HZ = (300.0, 450.0), (1500.0, 2500.0)
EDGE_S = 0.1      # no event starts or ends closer than this to the clip's edges
GAP_S = 0.2       # least silence between consecutive events of different types
SAME_GAP_S = 0.4  # ... and of the same type, so that two beeping sounds never sound like one
REPEAT_P = 0.3    # chance that an event repeats a type already in the scene (so type counts reach 2-4)
OVERLAP_P = 0.2   # chance that a multi-event scene has overlapping events even when they would fit in sequence


@dataclass(frozen=True)
class Event:
    """One sound event. ``freq`` is the fundamental (tone, beeping, note), the start of a chirp's sweep,
    the click resonance or the knock's body frequency; ``rate`` is repetitions per second of a train."""

    source: str
    loud: bool
    long: bool
    pitch: str | None  # "high" or "low" for `PITCHED` types, else None
    onset: float
    length: float
    level_db: float
    freq: float
    rate: float

    @property
    def end(self) -> float:
        return self.onset + self.length

    @property
    def loudness(self) -> str:
        return "loud" if self.loud else "quiet"

    @property
    def duration(self) -> str:
        return "long" if self.long else "short"


@dataclass(frozen=True)
class Scene:
    """A clip's events in onset order, over white background noise at ``background_db``."""

    seed: int
    events: tuple[Event, ...]
    background_db: float
    sample_rate: int = SAMPLE_RATE
    seconds: float = SECONDS

    @property
    def overlapping(self) -> bool:
        return any(b.onset < a.end for a, b in zip(self.events, self.events[1:]))

    def count(self, source: str) -> int:
        return sum(e.source == source for e in self.events)

    def to_dict(self) -> dict:
        return asdict(self)


def _frequency(source: str, pitch: str | None, rng: np.random.Generator) -> tuple[float, float]:
    if source in PITCHED:
        freq = rng.uniform(*(HIGH_HZ if pitch == "high" else LOW_HZ))
    elif source == "rising chirp":
        freq = rng.uniform(300, 450)      # sweeps up eightfold
    elif source == "falling chirp":
        freq = rng.uniform(2400, 3600)    # sweeps down eightfold
    elif source == "clicking":
        freq = rng.uniform(2500, 4000)
    elif source == "knocking":
        freq = rng.uniform(70, 110)
    else:
        freq = 0.0
    rate = {"beeping": (4.0, 5.0), "clicking": (10.0, 16.0), "knocking": (5.0, 7.0)}.get(source)
    return freq, (rng.uniform(*rate) if rate else 0.0)


def _layout(sources: list[str], lengths: list[float], overlap: bool, rng: np.random.Generator,
            seconds: float) -> list[float] | None:
    """Onsets for events in this order, or None when they cannot fit.

    Consecutive events of different types may overlap by 25-50 % of the shorter one (so each keeps at least
    half of itself clear and no three ever sound together); events are overlapped when asked, or when they
    do not fit in sequence. The remaining time becomes random silences before and between events.
    """
    n = len(lengths)
    links = range(n - 1)
    eligible = [i for i in links if sources[i] != sources[i + 1]]
    order = [eligible[j] for j in rng.permutation(len(eligible))]
    gaps: dict[int, float] = {}
    if overlap and order:
        i = order.pop()
        gaps[i] = -rng.uniform(0.25, 0.5) * min(lengths[i], lengths[i + 1])
    while True:
        minimum = sum(GAP_S if sources[i] != sources[i + 1] else SAME_GAP_S for i in links if i not in gaps)
        free = seconds - 2 * EDGE_S - sum(lengths) - sum(gaps.values()) - minimum
        if free >= 0:
            break
        if not order:
            return None
        i = order.pop()
        gaps[i] = -rng.uniform(0.25, 0.5) * min(lengths[i], lengths[i + 1])
    silent = [i for i in links if i not in gaps]
    shares = rng.dirichlet(np.ones(len(silent) + 2)) * free
    for share, i in zip(shares[1:], silent):
        gaps[i] = share + (GAP_S if sources[i] != sources[i + 1] else SAME_GAP_S)
    onsets = [EDGE_S + shares[0]]
    for i in links:
        onsets.append(onsets[-1] + lengths[i] + gaps[i])
    return onsets


def scene(seed: int, sample_rate: int = SAMPLE_RATE, seconds: float = SECONDS,
          max_events: int = MAX_EVENTS) -> Scene:
    """The scene of ``seed``: 1..max_events events (uniformly many), each attribute drawn independently.

    The sounds reach 3.6 kHz, so ``sample_rate`` must be at least 16 kHz; texts name at most four events.
    """
    if not 1 <= max_events <= MAX_EVENTS:
        raise ValueError(f"max_events={max_events}: scenes hold 1 to {MAX_EVENTS} events")
    if sample_rate < SAMPLE_RATE:
        raise ValueError(f"sample_rate={sample_rate}: the sounds need at least {SAMPLE_RATE} Hz")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, max_events + 1))
    sources: list[str] = []
    for _ in range(n):
        repeat = sources and rng.random() < REPEAT_P
        sources.append(sources[rng.integers(len(sources))] if repeat else TYPES[rng.integers(len(TYPES))])
    overlap = n > 1 and rng.random() < OVERLAP_P
    for _ in range(100):  # redraw lengths in the rare case (e.g. four long events of one type) that cannot fit
        long = [bool(b) for b in rng.integers(0, 2, n)]
        lengths = [float(rng.uniform(*(LONG_S if x else SHORT_S))) for x in long]
        onsets = _layout(sources, lengths, overlap, rng, seconds)
        if onsets is not None:
            break
    else:
        raise ValueError(f"{n} events do not fit in {seconds} s; use longer clips or fewer events")
    events = []
    for source, is_long, length, onset in zip(sources, long, lengths, onsets):
        loud = bool(rng.integers(2))
        pitch = ("high" if rng.integers(2) else "low") if source in PITCHED else None
        freq, rate = _frequency(source, pitch, rng)
        level = float(rng.uniform(*(LOUD_DB if loud else QUIET_DB))) + LEVEL_OFFSET_DB.get(source, 0.0)
        events.append(Event(source, loud, is_long, pitch, round(float(onset), 4), round(length, 4), round(level, 2),
                            round(float(freq), 2), round(float(rate), 3)))
    return Scene(seed, tuple(events), round(float(rng.uniform(*BACKGROUND_DB)), 2), sample_rate, seconds)
