"""The scene corpus: deterministic, true to its graph (checked by an independent reading of each question and
by measuring the audio), balanced per question type, varied in wording, and written end to end by its recipe."""

from __future__ import annotations

import importlib.util
import os
import re
from collections import Counter, defaultdict

import numpy as np
import pytest
import soundfile as sf

from pengi.data.manifest import load_manifest
from pengi.synthetic.scenes import (
    QUESTION_TYPES,
    TYPES,
    Event,
    Scene,
    captions,
    class_label,
    metadata,
    questions,
    render,
    tasks,
)
from pengi.synthetic.scenes import scene as make_scene
from pengi.synthetic.scenes.captions import ADJECTIVES, NOUNS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOUN = {NOUNS[t][0][0]: t for t in TYPES} | {NOUNS[t][0][1]: t for t in TYPES}
NUMBER = {"one": 1, "two": 2, "three": 3, "four": 4}
ORDINAL = {"first": 0, "second": 1, "third": 2, "fourth": 3}


def db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12)


def event(source, loud=True, long=False, pitch=None, onset=0.2, length=0.5, freq=1000.0, rate=0.0):
    return Event(source, loud, long, pitch, onset, length, -18.0 if loud else -40.0, freq, rate)


def resolve(s: Scene, ref: str) -> int:
    """The index of the event that ``ref`` ("the second sound", "the noise burst", ...) names."""
    ref = ref.removeprefix("the ")
    if ref == "sound":
        assert len(s.events) == 1
        return 0
    if ref == "last sound":
        return len(s.events) - 1
    if ref.endswith(" sound") and ref.split()[0] in ORDINAL:
        return ORDINAL[ref.split()[0]]
    matches = [i for i, e in enumerate(s.events) if e.source == NOUN[ref]]
    assert len(matches) == 1, f"{ref!r} is ambiguous in {s}"
    return matches[0]


def oracle(s: Scene, question: str) -> str:
    """The answer to ``question``, read from the graph independently of `pengi.synthetic.scenes.questions`."""
    ev, yn = s.events, lambda b: "yes" if b else "no"
    if m := re.fullmatch(r"(?:is there|can you hear) an? (high|low) pitched (.+)\?", question):
        return yn(any(e.pitch == m[1] and e.source == NOUN[m[2]] for e in ev))
    if m := re.fullmatch(r"(?:is there|can you hear|does the clip contain) an? (.+)\?", question):
        return yn(any(e.source == NOUN[m[1]] for e in ev))
    if m := re.fullmatch(r"is (the .+) (\w+) or (\w+)( pitched)?\?", question):
        e = ev[resolve(s, m[1])]
        value = e.pitch if m[4] else (e.loudness if {m[2], m[3]} == {"loud", "quiet"} else e.duration)
        assert value in (m[2], m[3])
        return value
    if m := re.fullmatch(r"is (the .+?) (loud|quiet)\?", question):
        return yn(ev[resolve(s, m[1])].loudness == m[2])
    if m := re.fullmatch(r"(?:does|is) (the .+?) (?:come|heard) (before|after) (the .+)\?", question):
        a, b = ev[resolve(s, m[1])], ev[resolve(s, m[3])]
        return yn((a.onset < b.onset) == (m[2] == "before"))
    if re.fullmatch(r"how many (sounds are there|sounds can you hear|sound events are there)\?", question):
        return [k for k, v in NUMBER.items() if v == len(ev)][0]
    if m := re.fullmatch(r"how many (.+) are there\?", question):
        kind = m[1].removesuffix(" sounds")
        by_loudness = kind in ("loud", "quiet")
        n = sum(e.loudness == kind if by_loudness else e.source == NOUN[m[1]] for e in ev)
        return [k for k, v in NUMBER.items() if v == n][0]
    if question in ("what is the sound?", "what sound can you hear?"):
        return ev[0].source
    if m := re.fullmatch(r"(?:what is the (loudest|quietest) sound|which sound is the (loudest|quietest))\?", question):
        loud = (m[1] or m[2]) == "loudest"
        sources = {e.source for e in ev if e.loud == loud}
        assert len(sources) == 1 and any(e.loud != loud for e in ev)
        return sources.pop()
    if m := re.fullmatch(r"(?:what is the (\w+) sound|which sound comes (first|last))\?", question):
        return ev[resolve(s, f"the {m[1] or m[2]} sound")].source
    if m := re.fullmatch(r"what sound comes (after|before) (the .+)\?", question):
        return ev[resolve(s, m[2]) + (1 if m[1] == "after" else -1)].source
    if m := re.fullmatch(r"is (the .+) (louder|quieter|longer|shorter) than (the .+)\?", question):
        a, b = ev[resolve(s, m[1])], ev[resolve(s, m[3])]
        key = "loud" if m[2] in ("louder", "quieter") else "long"
        assert getattr(a, key) != getattr(b, key), "a comparison between equals has no answer"
        return yn(getattr(a, key) == (m[2] in ("louder", "longer")))
    raise AssertionError(f"unknown question form: {question!r}")


def test_same_seed_same_scene_audio_and_texts():
    for seed in (0, 3, 12345):
        a, b = make_scene(seed), make_scene(seed)
        assert a == b and np.array_equal(render(a), render(b))
        assert tasks(a, 6, 3) == tasks(b, 6, 3)
        x = render(a)
        assert x.dtype == np.float32 and x.shape == (64000,) and np.abs(x).max() <= 0.95
    assert make_scene(1) != make_scene(2) and not np.array_equal(render(make_scene(1)), render(make_scene(2)))
    assert all(len(make_scene(seed, max_events=2).events) <= 2 for seed in range(50))
    with pytest.raises(ValueError, match="do not fit"):
        [make_scene(seed, seconds=1.5) for seed in range(20)]


def test_scene_graphs_respect_the_design():
    counts = Counter()
    for seed in range(400):
        s = make_scene(seed)
        counts[len(s.events)] += 1
        ev = s.events
        assert all(0.1 - 1e-6 <= e.onset and e.end <= 3.9 + 1e-6 for e in ev)
        assert all(e.source in TYPES and (e.pitch is not None) == (e.source in ("tone", "beeping", "note")) for e in ev)
        assert all((0.9 <= e.length <= 1.3) if e.long else (0.4 <= e.length <= 0.6) for e in ev)
        for a, b in zip(ev, ev[1:]):
            assert b.onset > a.onset + 0.19
            if a.source == b.source:
                assert b.onset - a.end >= 0.4 - 1e-3  # repeats of one type are always clearly apart
            elif b.onset < a.end:
                assert a.end - b.onset <= 0.5 * min(a.length, b.length) + 1e-3  # each keeps half of itself clear
            else:
                assert b.onset - a.end >= 0.2 - 1e-3
    assert all(70 < counts[n] < 130 for n in (1, 2, 3, 4)), counts


def test_every_answer_matches_an_independent_reading_of_the_graph():
    seen = Counter()
    for seed in range(500):
        s = make_scene(seed)
        for qa in questions(s, 6):
            assert oracle(s, qa.question) == qa.answer, (qa, s)
            seen[qa.question_type] += 1
    assert set(seen) == set(QUESTION_TYPES)


def test_texts_of_a_hand_made_scene():
    s = Scene(7, (event("beeping", pitch="high", freq=2000, rate=4.5, onset=0.2),
                  event("noise", loud=False, long=True, onset=1.0, length=1.0),
                  event("clicking", loud=False, onset=2.3, freq=3000, rate=12),
                  event("clicking", loud=False, onset=3.2, freq=3000, rate=12)), -60.0)
    assert class_label(s) == "beeping, noise, clicking"
    assert metadata(s) == ("4 events: first loud short high beeping, second quiet long noise, third quiet short "
                           "clicking, last quiet short clicking")
    asked = {}
    for seed in range(300):
        for qa in questions(Scene(seed, s.events, s.background_db), 6):
            asked[qa.question] = qa.answer
    expected = {"how many sounds are there?": "four", "how many clicking sounds are there?": "two",
                "how many quiet sounds are there?": "three", "what is the loudest sound?": "beeping",
                "what is the first sound?": "beeping", "what is the last sound?": "clicking",
                "is the beeping sound high or low pitched?": "high", "is the noise burst long or short?": "long"}
    for question, answer in expected.items():
        assert asked.get(question) == answer, question
    assert "what is the quietest sound?" not in asked  # two quiet types: no single answer, never asked
    assert all("the clicking sound" not in q for q in asked)  # two clicks: named by position only
    assert any(c.startswith("a loud high") and "two" in c for c in captions(s, 5))


def test_audio_matches_the_graph():
    loud_levels, quiet_levels = [], []
    for seed in range(80):
        s = make_scene(seed)
        x = render(s).astype(np.float64)
        sr = s.sample_rate
        active = np.zeros(len(x), bool)
        for e in s.events:
            active[int((e.onset - 0.02) * sr):int((e.end + 0.02) * sr)] = True
        background = db(x[~active])
        assert abs(background - s.background_db) < 1.0
        for e in s.events:
            inside = db(x[int(e.onset * sr):int(e.end * sr)])
            assert inside > background + 12, (seed, e)
            if not s.overlapping:  # alone in its window, an event measures at its level
                assert abs(inside - e.level_db) < 1.0, (seed, e, inside)
                (loud_levels if e.loud else quiet_levels).append(inside)
        if not s.overlapping:
            assert len(segments(x, sr, s.background_db)) == len(s.events), seed
            onsets = [start for start, _ in segments(x, sr, s.background_db)]
            assert np.allclose(onsets, [e.onset for e in s.events], atol=0.03), seed
        loud = [db(x[int(e.onset * sr):int(e.end * sr)]) for e in s.events if e.loud]
        quiet = [db(x[int(e.onset * sr):int(e.end * sr)]) for e in s.events if not e.loud]
        if loud and quiet and not s.overlapping:
            assert min(loud) > max(quiet) + 10  # within a scene, loud is clearly louder
    assert min(loud_levels) > max(quiet_levels) + 8 and len(loud_levels) > 30 and len(quiet_levels) > 30


def segments(x: np.ndarray, sr: int, background_db: float, hop: float = 0.01,
             bridge: float = 0.16) -> list[tuple[float, float]]:
    """Stretches of 10 ms frames 6 dB above the background, joined across gaps shorter than ``bridge``
    (the gaps inside a beeping, clicking or knocking sound; separate events are at least 0.2 s apart)."""
    n = int(hop * sr)
    frames = x[:len(x) // n * n].reshape(-1, n)
    on = 20 * np.log10(np.sqrt((frames**2).mean(1)) + 1e-12) > background_db + 6
    found: list[list[float]] = []
    for i in np.flatnonzero(on):
        if found and i * hop - found[-1][1] < bridge:
            found[-1][1] = (i + 1) * hop
        else:
            found.append([i * hop, (i + 1) * hop])
    return [(a, b) for a, b in found]


def test_answers_are_balanced_per_question_type():
    answers = defaultdict(Counter)
    for seed in range(400):
        for qa in questions(make_scene(seed), 4):
            answers[qa.question_type][qa.answer] += 1
    share = {t: {a: c / sum(v.values()) for a, c in v.items()} for t, v in answers.items()}
    for kind in ("yes/no", "comparison"):
        assert set(share[kind]) == {"yes", "no"} and 0.4 <= share[kind]["yes"] <= 0.6, share[kind]
    assert set(share["count"]) == set(NUMBER) and all(0.15 <= v <= 0.35 for v in share["count"].values()), share
    for first, second in (("loud", "quiet"), ("long", "short"), ("high", "low")):
        a, b = answers["attribute"][first], answers["attribute"][second]
        assert 0.35 <= a / (a + b) <= 0.65, (first, a, second, b)
    for kind in ("order", "loudest"):
        assert set(share[kind]) == set(TYPES) and max(share[kind].values()) < 0.25, share[kind]
    assert all(sum(answers[t].values()) > 80 for t in QUESTION_TYPES), {t: sum(v.values()) for t, v in answers.items()}


def test_captions_vary_and_tell_the_truth():
    loudness = {w: k for k in ("loud", "quiet") for w in ADJECTIVES[k]}
    texts = []
    for seed in range(300):
        s = make_scene(seed)
        for text in captions(s, 2):
            words = set(re.findall(r"[a-z]+", text))
            assert {loudness[w] for w in words & set(loudness)} == {e.loudness for e in s.events}, text
            for e in s.events:
                assert any(singular in text or plural in text for singular, plural in NOUNS[e.source]), text
            texts.append(text)
    assert len(set(texts)) > 0.95 * len(texts)
    assert captions(make_scene(11), 3) == captions(make_scene(11), 3) and len(set(captions(make_scene(11), 3))) == 3
    templates = {re.sub(r"(loud|quiet|soft|faint)", "", t).split()[0] for t in texts}
    assert len(templates) >= 6  # openings differ: "a", "two", "first", "only", "there", "four", ...


def load_recipe():
    return importlib.import_module("pengi_recipes.make_scene_corpus")


def test_recipe_writes_a_corpus_that_loads(tmp_path, capsys):
    recipe = load_recipe()
    recipe.main(["--out", str(tmp_path), "--train", "5", "--validation", "3", "--test", "4",
                 "--questions-per-scene", "3"])
    assert "clips/min" in capsys.readouterr().out
    names = {}
    for split, count in (("train", 5), ("validation", 3), ("test", 4)):
        rows = load_manifest(tmp_path / f"{split}.jsonl")
        assert len(rows) == count * 6
        assert Counter(rows["task"]) == {"caption": count, "sound_event": count, "metadata": count, "aqa": 3 * count}
        assert {r["question_type"] for r in rows if r["task"] == "aqa"} <= set(QUESTION_TYPES)
        assert all(r["question_type"] is None for r in rows if r["task"] != "aqa")
        assert all(r["prompt"].startswith("question: ") for r in rows if r["task"] == "aqa")
        names[split] = {os.path.basename(r["audio"]) for r in rows}
        assert len(names[split]) == count
        for path in sorted({r["audio"] for r in rows})[:2]:
            x, sr = sf.read(path, dtype="float32")
            assert sr == 16000 and sf.info(path).subtype == "PCM_16"
            seed = int(os.path.basename(path).removesuffix(".wav"))
            assert np.abs(x - render(make_scene(seed))).max() < 1e-4
            answers = [r["answer"] for r in rows if r["audio"] == path]
            assert answers == [r["answer"] for r in tasks(make_scene(seed), 3)]
    assert not (names["train"] & names["validation"]) and not (names["train"] & names["test"])
    assert not (names["validation"] & names["test"])


def test_split_seed_ranges_are_disjoint():
    recipe = load_recipe()
    ranges = sorted((start, start + (recipe.SPLIT_SEEDS if split != "train" else 10**12))
                    for split, start in recipe.SPLITS.items())
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(ranges, ranges[1:]))
    with pytest.raises(ValueError, match="at most 500000 clips"):
        recipe.write_split("/nonexistent", "validation", recipe.SPLIT_SEEDS + 1)
