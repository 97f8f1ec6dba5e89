"""Synthetic acoustic scenes for diagnostic audio-language training, in the style of CLEAR and DAQA.

A scene is a seeded graph of 1-4 sound events (eight source types, loud or quiet, short or long, high or low
where pitched) placed in a 4 s clip at 16 kHz with silences, sometimes overlaps, over faint noise. From the
graph come the audio (`render`) and texts that are true of it: varied captions, a class label, metadata and
questions with balanced answers. Unlike `pengi.synthetic` (one sound per clip), answers depend on counting,
order and comparison, so a model cannot pass by language priors alone. The same seed always gives the same
scene, audio and texts; disjoint seed ranges give disjoint splits.

    s = scene(7)
    audio = render(s)                      # float32, 64000 samples
    for row in tasks(s, questions_per_scene=4): ...
"""

from __future__ import annotations

from pengi.data.tasks import prompt_for
from pengi.synthetic.scenes.captions import captions, class_label, metadata
from pengi.synthetic.scenes.graph import PITCHED, TYPES, Event, Scene, scene
from pengi.synthetic.scenes.questions import QA, QUESTION_TYPES, questions
from pengi.synthetic.scenes.render import render

__all__ = ["PITCHED", "QA", "QUESTION_TYPES", "TYPES", "Event", "Scene", "captions", "class_label", "metadata",
           "questions", "render", "scene", "tasks"]


def tasks(s: Scene, questions_per_scene: int = 4, captions_per_scene: int = 1) -> list[dict[str, str | None]]:
    """Manifest fields (task, prompt, answer, question_type) of every example of the scene, with Pengi's prompts."""
    rows = [{"task": "caption", "prompt": prompt_for("caption"), "answer": c, "question_type": None}
            for c in captions(s, captions_per_scene)]
    rows += [{"task": "sound_event", "prompt": prompt_for("sound_event"), "answer": class_label(s),
              "question_type": None},
             {"task": "metadata", "prompt": prompt_for("metadata"), "answer": metadata(s), "question_type": None}]
    rows += [{"task": "aqa", "prompt": prompt_for("aqa", question=q.question), "answer": q.answer,
              "question_type": q.question_type} for q in questions(s, questions_per_scene)]
    return rows
