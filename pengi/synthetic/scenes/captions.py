"""Captions, class labels and metadata computed from a scene graph.

Captions vary (several sentence templates, synonyms for sources and adjectives) so that a captioner must
listen rather than learn one string, but every caption states the truth: each event's loudness, the events
in onset order, counts of repeated events, and overlaps. The variation is drawn from the scene's seed, so a
scene always gets the same captions.
"""

from __future__ import annotations

import numpy as np

from pengi.synthetic.scenes.graph import Event, Scene

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")
ORDINALS = ("first", "second", "third", "fourth")

# Phrasings (singular, plural) of each source in captions; the first is the one questions use.
NOUNS: dict[str, tuple[tuple[str, str], ...]] = {
    "tone": (("steady tone", "steady tones"), ("tone", "tones"), ("constant tone", "constant tones")),
    "rising chirp": (("rising chirp", "rising chirps"), ("rising tone", "rising tones"),
                     ("upward sweep", "upward sweeps")),
    "falling chirp": (("falling chirp", "falling chirps"), ("falling tone", "falling tones"),
                      ("downward sweep", "downward sweeps")),
    "beeping": (("beeping sound", "beeping sounds"), ("series of beeps", "series of beeps"),
                ("burst of beeps", "bursts of beeps")),
    "noise": (("noise burst", "noise bursts"), ("burst of static", "bursts of static"), ("hiss", "hisses")),
    "clicking": (("clicking sound", "clicking sounds"), ("series of clicks", "series of clicks"),
                 ("ticking sound", "ticking sounds")),
    "note": (("plucked note", "plucked notes"), ("musical note", "musical notes"),
             ("plucked string", "plucked strings")),
    "knocking": (("knocking sound", "knocking sounds"), ("series of knocks", "series of knocks"),
                 ("thumping sound", "thumping sounds")),
}
ADJECTIVES = {"loud": ("loud",), "quiet": ("quiet", "soft", "faint"), "high": ("high", "high pitched"),
              "low": ("low", "low pitched", "deep"), "short": ("short", "brief"), "long": ("long", "sustained")}
THEN = (", then ", " followed by ", " and then ")
WITH = (" overlapping with ", " along with ", " at the same time as ")


def class_label(scene: Scene) -> str:
    """The answer to "this is a sound of": the distinct source types in order of first onset, comma-separated
    ("beeping, noise"); a one-event scene gives its single type."""
    return ", ".join(dict.fromkeys(e.source for e in scene.events))


def metadata(scene: Scene) -> str:
    """The answer to "generate metadata": a fixed-form list with no free choices, unlike captions, e.g.
    "3 events: first loud short high beeping, second quiet long noise, last quiet short clicking, overlapping"
    (", overlapping" when events overlap). Events are named as questions name them ("the second sound", "the
    last sound"), so the list can be read against a question by matching words."""
    n = len(scene.events)
    names = [""] if n == 1 else [*ORDINALS[: n - 1], "last"]
    events = [" ".join(w for w in (name, e.loudness, e.duration, e.pitch, e.source) if w)
              for name, e in zip(names, scene.events)]
    return f"{n} event{'s' if n > 1 else ''}: " + ", ".join(events + (["overlapping"] if scene.overlapping else []))


def _groups(scene: Scene) -> list[list[Event]]:
    """Consecutive events that sound alike (source, loudness, pitch) and do not overlap: "two quiet clicks"."""
    groups: list[list[Event]] = []
    for e in scene.events:
        last = groups[-1][-1] if groups else None
        if last and (last.source, last.loud, last.pitch) == (e.source, e.loud, e.pitch) and e.onset >= last.end:
            groups[-1].append(e)
        else:
            groups.append([e])
    return groups


def _phrase(group: list[Event], rng: np.random.Generator, durations: bool, noun: tuple[str, str]) -> str:
    e = group[0]
    words = [ADJECTIVES[e.loudness][rng.integers(len(ADJECTIVES[e.loudness]))]]
    if durations and all(g.long == e.long for g in group):
        words.append(ADJECTIVES[e.duration][rng.integers(2)])
    if e.pitch:
        words.append(ADJECTIVES[e.pitch][rng.integers(len(ADJECTIVES[e.pitch]))])
    singular, plural = noun
    count = "a" if len(group) == 1 else NUMBERS[len(group)]
    return " ".join([count, *words, singular if len(group) == 1 else plural])


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """One caption of ``scene``, its wording drawn with ``rng``."""
    groups = _groups(scene)
    # One wording per source within a caption, so that two "knocking sounds" are not a knock and a thump.
    nouns = {t: NOUNS[t][rng.integers(len(NOUNS[t]))] for t in dict.fromkeys(e.source for e in scene.events)}
    durations = rng.random() < 0.3
    phrases = [_phrase(g, rng, durations, nouns[g[0].source]) for g in groups]
    n = len(scene.events)
    if len(groups) == 1 and n == 1:
        forms = ("{0}", "{0} is heard", "{0} and nothing else", "only {0} can be heard",
                 "there is {0}", "a single sound: {0}")
        return forms[rng.integers(len(forms))].format(phrases[0])
    if len(groups) == 1:
        forms = ("{0}", "{0} in a row", "{0}, one after another", "{0} separated by silence")
        return forms[rng.integers(len(forms))].format(phrases[0])
    then, with_ = THEN[rng.integers(len(THEN))], WITH[rng.integers(len(WITH))]
    overlaps = [b[0].onset < a[-1].end for a, b in zip(groups, groups[1:])]
    text = phrases[0]
    for i, (phrase, overlap) in enumerate(zip(phrases[1:], overlaps)):
        link = with_ if overlap else then
        if link == ", then " and i == len(overlaps) - 1 and len(groups) > 2 and rng.random() < 0.5:
            link = ", and finally "
        text += link + phrase
    style = rng.integers(6)
    if style == 1 and not overlaps[0]:
        return text.replace(then, " is followed by ", 1)
    if style == 2:
        return f"{NUMBERS[n]} sounds: {text}"
    if style == 3:
        return f"a sequence of {NUMBERS[n]} sounds: {text}"
    if style == 4:
        return f"first {text}"
    if style == 5 and not any(overlaps):
        return f"{text}, with silence in between"
    return text


def captions(scene: Scene, k: int = 1) -> list[str]:
    """``k`` different captions of ``scene`` (fewer if it has fewer wordings), the same for the same seed."""
    rng = np.random.default_rng([scene.seed, 2])
    found: list[str] = []
    for _ in range(20 * k):
        text = caption(scene, rng)
        if text not in found:
            found.append(text)
            if len(found) == k:
                break
    return found
