"""Questions about a scene, with answers computed from its graph, chosen so that answers are balanced.

Six question types, in the style of CLEAR and DAQA; answers come from small fixed vocabularies:

- ``yes/no`` (yes, no): is there a X? is the first/last sound loud/quiet? is there a high/low pitched X?
  does the X come before/after the Y?
- ``count`` (one, two, three, four, as words like the captions): how many sounds / Xs / loud / quiet sounds?
- ``order`` (a source type): what is the first / last / second sound? what comes after / before the X?
- ``attribute`` (loud, quiet, high, low, long, short): is the X loud or quiet? high or low? long or short?
- ``comparison`` (yes, no): is the first sound louder / quieter / longer / shorter than the last?
- ``loudest`` (a source type): what is the loudest / quietest sound?

Balance is by construction: a yes/no or comparison question first draws its answer (yes or no, evenly) and
then a question with that answer, using only question families that can give both answers for this scene,
so no wording predicts its answer; attributes draw the value first in the same way; count questions mostly
ask for the total count (uniform over 1-4, as scenes are) and are asked of fewer one-event scenes, so that
counts stay near uniform although "one" is the only count many questions can have. Events are named by
type only when the type occurs once in the scene, else by position ("the second sound"), so every question
has one answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pengi.synthetic.scenes.captions import NOUNS, NUMBERS, ORDINALS
from pengi.synthetic.scenes.graph import PITCHED, TYPES, Event, Scene

QUESTION_TYPES = ("yes/no", "count", "order", "attribute", "comparison", "loudest")
TOTAL_COUNT_P = 0.85  # a count question asks for the total with this chance, else another count the scene has
ONE_EVENT_COUNT_P = 0.4  # ... and is asked of a one-event scene only with this chance: "one" is common enough


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    question_type: str


def _noun(source: str, plural: bool = False) -> str:
    return NOUNS[source][0][int(plural)]


def _pick(rng: np.random.Generator, items):
    return items[rng.integers(len(items))]


def _references(scene: Scene, i: int) -> list[str]:
    """Names that pick out event ``i`` alone: its type if unique, else its position."""
    events = scene.events
    if len(events) == 1:
        names = ["the sound"]
    elif i == len(events) - 1:
        names = ["the last sound"]
    else:
        names = [f"the {ORDINALS[i]} sound"]
    if scene.count(events[i].source) == 1:
        names.append(f"the {_noun(events[i].source)}")
    return names


def _unique(scene: Scene) -> list[int]:
    return [i for i, e in enumerate(scene.events) if scene.count(e.source) == 1]


# yes/no families: each returns a question whose answer is ``yes`` (True or False); None if it cannot.
def _exists(scene: Scene, rng: np.random.Generator, yes: bool) -> str:
    present = [e.source for e in scene.events]
    source = _pick(rng, present) if yes else _pick(rng, [t for t in TYPES if t not in present])
    return _pick(rng, ("is there a {}?", "can you hear a {}?", "does the clip contain a {}?")).format(_noun(source))


def _first_last_loud(scene: Scene, rng: np.random.Generator, yes: bool) -> str:
    i = _pick(rng, (0, len(scene.events) - 1))
    loud = scene.events[i].loud == yes
    return f"is {_references(scene, i)[0]} {'loud' if loud else 'quiet'}?"


def _pitch(scene: Scene, rng: np.random.Generator, yes: bool) -> str:
    present = {(e.source, e.pitch) for e in scene.events if e.pitch}
    if yes:
        source, pitch = _pick(rng, sorted(present))
    else:
        absent = [(t, p) for t in sorted(PITCHED) for p in ("high", "low") if (t, p) not in present]
        near = [(t, p) for t, p in absent if any(s == t for s, _ in present)]  # the same type, other pitch
        source, pitch = _pick(rng, near if near and rng.random() < 0.5 else absent)
    return _pick(rng, ("is there a {} pitched {}?", "can you hear a {} pitched {}?")).format(pitch, _noun(source))


def _before(scene: Scene, rng: np.random.Generator, yes: bool) -> str:
    i, j = (int(k) for k in rng.choice(_unique(scene), 2, replace=False))
    a, b = scene.events[i], scene.events[j]
    word = "before" if (a.onset < b.onset) == yes else "after"
    form = _pick(rng, ("does the {} come {} the {}?", "is the {} heard {} the {}?"))
    return form.format(_noun(a.source), word, _noun(b.source))


def _yes_no(scene: Scene, rng: np.random.Generator) -> QA:
    yes = bool(rng.integers(2))
    families: list[Callable] = [_exists, _first_last_loud]
    if any(e.pitch for e in scene.events):
        families.append(_pitch)
    if len(_unique(scene)) >= 2:
        families.append(_before)
    return QA(_pick(rng, families)(scene, rng, yes), "yes" if yes else "no", "yes/no")


def _count(scene: Scene, rng: np.random.Generator) -> QA | None:
    n = len(scene.events)
    if n == 1 and rng.random() >= ONE_EVENT_COUNT_P:
        return None
    options: dict[int, list[str]] = {n: ["how many sounds are there?", "how many sounds can you hear?",
                                         "how many sound events are there?"]}
    other: dict[int, list[str]] = {}
    for source in dict.fromkeys(e.source for e in scene.events):
        other.setdefault(scene.count(source), []).append(f"how many {_noun(source, plural=True)} are there?")
    loud = sum(e.loud for e in scene.events)
    for word, k in (("loud", loud), ("quiet", n - loud)):
        if k:
            other.setdefault(k, []).append(f"how many {word} sounds are there?")
    smaller = sorted(k for k in other if k != n)
    if smaller and rng.random() >= TOTAL_COUNT_P:
        k = int(_pick(rng, smaller))
        return QA(_pick(rng, other[k]), NUMBERS[k], "count")
    return QA(_pick(rng, options[n] + other.get(n, [])), NUMBERS[n], "count")


def _order(scene: Scene, rng: np.random.Generator) -> QA:
    events, n = scene.events, len(scene.events)
    if n == 1:
        return QA(_pick(rng, ("what is the sound?", "what sound can you hear?")), events[0].source, "order")
    forms: list[tuple[str, Event]] = [
        (_pick(rng, ("what is the first sound?", "which sound comes first?")), events[0]),
        (_pick(rng, ("what is the last sound?", "which sound comes last?")), events[-1])]
    forms += [(f"what is the {ORDINALS[i]} sound?", events[i]) for i in range(1, n - 1)]
    for i in _unique(scene):
        name = _noun(events[i].source)
        if i + 1 < n:
            forms.append((f"what sound comes after the {name}?", events[i + 1]))
        if i > 0:
            forms.append((f"what sound comes before the {name}?", events[i - 1]))
    question, event = _pick(rng, forms)
    return QA(question, event.source, "order")


ATTRIBUTES: dict[str, tuple[str, str, Callable[[Event], str | None]]] = {
    "loudness": ("loud", "quiet", lambda e: e.loudness),
    "pitch": ("high", "low", lambda e: e.pitch),
    "duration": ("long", "short", lambda e: e.duration),
}


def _attribute(scene: Scene, rng: np.random.Generator) -> QA:
    kinds = [k for k in ATTRIBUTES if k != "pitch" or any(e.pitch for e in scene.events)]
    first, second, value = ATTRIBUTES[_pick(rng, kinds)]
    wanted = _pick(rng, (first, second))
    candidates = [i for i, e in enumerate(scene.events) if value(e) == wanted]
    if not candidates:  # every event has the other value; by symmetry this keeps the balance
        candidates = [i for i, e in enumerate(scene.events) if value(e) is not None]
    i = int(_pick(rng, candidates))
    a, b = (first, second) if rng.random() < 0.5 else (second, first)
    suffix = " pitched" if first == "high" else ""
    question = f"is {_pick(rng, _references(scene, i))} {a} or {b}{suffix}?"
    return QA(question, value(scene.events[i]), "attribute")


def _comparison(scene: Scene, rng: np.random.Generator) -> QA | None:
    events = scene.events
    kinds = {"loud": ("louder", "quieter"), "long": ("longer", "shorter")}
    pairs = [(kind, i, j) for kind in kinds for i in range(len(events)) for j in range(len(events))
             if getattr(events[i], kind) != getattr(events[j], kind)]
    if not pairs:
        return None
    kind, i, j = pairs[rng.integers(len(pairs))]
    yes = bool(rng.integers(2))
    more, less = kinds[kind]
    word = more if getattr(events[i], kind) == yes else less
    question = f"is {_pick(rng, _references(scene, i))} {word} than {_pick(rng, _references(scene, j))}?"
    return QA(question, "yes" if yes else "no", "comparison")


def _loudest(scene: Scene, rng: np.random.Generator) -> QA | None:
    forms: list[tuple[str, str]] = []
    for loud, words in ((True, ("what is the loudest sound?", "which sound is the loudest?")),
                        (False, ("what is the quietest sound?", "which sound is the quietest?"))):
        chosen = {e.source for e in scene.events if e.loud == loud}
        if len(chosen) == 1 and any(e.loud != loud for e in scene.events):
            forms += [(w, next(iter(chosen))) for w in words]
    if not forms:
        return None
    question, answer = _pick(rng, forms)
    return QA(question, answer, "loudest")


MAKERS: dict[str, Callable[[Scene, np.random.Generator], QA | None]] = {
    "yes/no": _yes_no, "count": _count, "order": _order, "attribute": _attribute, "comparison": _comparison,
    "loudest": _loudest}


def questions(scene: Scene, k: int = 4) -> list[QA]:
    """``k`` different questions about ``scene`` (fewer only if it has fewer), the same for the same seed.

    The types are taken in a random order, each once before any repeats, skipping those the scene cannot
    support (a one-event scene has no comparison), so each type is about equally common in a corpus.
    """
    rng = np.random.default_rng([scene.seed, 3])
    found: list[QA] = []
    order = [QUESTION_TYPES[i] for i in rng.permutation(len(QUESTION_TYPES))]
    for attempt in range(30 * k):
        if len(found) == k:
            break
        qa = MAKERS[order[attempt % len(order)]](scene, rng)
        if qa is not None and all(qa.question != f.question for f in found):
            found.append(qa)
    return found
