"""Pengi's task prompts, in one place: every recipe, adapter and benchmark takes its prompts from here."""

from __future__ import annotations

TASK_PROMPTS: dict[str, str] = {
    "caption": "generate audio caption",
    "metadata": "generate metadata",
    "aqa": "question: {question}",
    "sound_event": "this is a sound of",
    "acoustic_scene": "this acoustic scene is",
    "emotion": "this emotion is",
    "music_genre": "this music genre is",
    "music_instrument": "this music instrument is",
    "music_note": "this music note is",
    "speaker_count": "this speaker count is",
    "vocal_sound": "this vocal sound is",
}


DESCRIBE_PROMPTS: dict[str, str] = {"caption": TASK_PROMPTS["caption"], "metadata": TASK_PROMPTS["metadata"],
                                   "sound_events": TASK_PROMPTS["sound_event"]}
"""What `Pengi.describe` asks about each clip: its output fields and their prompts."""


def prompt_for(task: str, **fields: str) -> str:
    """The prompt of ``task``; question answering takes ``question=...``."""
    if task not in TASK_PROMPTS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASK_PROMPTS)}")
    try:
        return TASK_PROMPTS[task].format(**fields)
    except KeyError as err:
        raise ValueError(f"task {task!r} needs the field {err.args[0]!r}") from None
