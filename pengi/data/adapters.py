"""Turn standard corpora, laid out as their publishers distribute them, into manifest rows.

Each adapter reads the publisher's metadata files and yields rows for `write_manifest`. Rows whose audio
file is missing are skipped and counted (a partial download is common), never silently: the adapter
logs how many were skipped and the first missing path. Audio paths are joined onto the folders given, so give
absolute folders (`pengi manifest` makes them absolute) for a manifest that resolves wherever it is read.

The type hints are the options' types for `pengi manifest KEY=VALUE`: `FilePath` (a file or folder), `str`,
`Literal` choices, and `list[int]` (``folds=5``, ``folds=1,2,3`` or ``folds=[1,2,3]``).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator
from typing import Any, Literal, NewType

from pengi.data.tasks import prompt_for

log = logging.getLogger("pengi")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
FilePath = NewType("FilePath", str)  # a file or folder of the corpus
Confidence = Literal["no", "maybe", "yes"]


def _read_csv(path: str) -> list[dict[str, str]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not found (is the corpus laid out as its publisher distributes it?)")
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


class _Present:
    """Keeps rows whose audio exists and reports the missing ones once, at the end."""

    def __init__(self, corpus: str):
        self.corpus, self.missing, self.first = corpus, 0, None

    def __call__(self, path: str) -> bool:
        if os.path.isfile(path):
            return True
        self.missing += 1
        self.first = self.first or path
        return False

    def report(self) -> None:
        if self.missing:
            log.warning("%s: skipped %d rows whose audio is missing (first: %s)", self.corpus, self.missing, self.first)


def _label_text(label: str) -> str:
    return label.replace("_", " ").strip().lower()


def audiocaps(csv_path: FilePath, audio_dir: FilePath, name: str = "{youtube_id}.wav") -> Iterator[dict[str, Any]]:
    """AudioCaps ``{train,val,test}.csv`` (audiocap_id, youtube_id, start_time, caption).

    ``name`` formats the audio file name from the row's columns; downloaders differ (``{youtube_id}.wav``,
    ``{audiocap_id}.wav``, ``Y{youtube_id}.wav``), so it is a parameter.
    """
    present = _Present("audiocaps")
    for row in _read_csv(csv_path):
        path = os.path.join(audio_dir, name.format(**row))
        if present(path):
            yield {"audio": path, "task": "caption", "prompt": prompt_for("caption"), "answer": row["caption"],
                   "dataset": "audiocaps"}
    present.report()


def clotho(root: FilePath, split: Literal["development", "validation", "evaluation"]) -> Iterator[dict[str, Any]]:
    """Clotho v2: ``clotho_captions_<split>.csv`` (file_name, caption_1..caption_5), audio in ``<root>/<split>/``.

    One row per caption, so each clip appears five times in a training manifest.
    """
    present = _Present("clotho")
    for row in _read_csv(os.path.join(root, f"clotho_captions_{split}.csv")):
        path = os.path.join(root, split, row["file_name"])
        if not present(path):
            continue
        for i in range(1, 6):
            caption = row.get(f"caption_{i}", "").strip()
            if caption:
                yield {"audio": path, "task": "caption", "prompt": prompt_for("caption"), "answer": caption,
                       "dataset": "clotho"}
    present.report()


def clotho_aqa(csv_path: FilePath, audio_dir: FilePath, min_confidence: Confidence = "maybe"
               ) -> Iterator[dict[str, Any]]:
    """ClothoAQA ``clotho_aqa_<split>.csv`` (file_name, QuestionText, answer, confidence).

    Answers whose annotator confidence is below ``min_confidence`` ("no" < "maybe" < "yes") are left out.
    """
    order = {"no": 0, "maybe": 1, "yes": 2}
    present = _Present("clotho_aqa")
    for row in _read_csv(csv_path):
        if order.get(row.get("confidence", "yes").strip().lower(), 2) < order[min_confidence]:
            continue
        path = os.path.join(audio_dir, row["file_name"])
        if present(path):
            question = row["QuestionText"].strip()
            yield {"audio": path, "task": "aqa", "prompt": prompt_for("aqa", question=question),
                   "answer": row["answer"].strip(), "dataset": "clotho_aqa"}
    present.report()


def esc50(root: FilePath, folds: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """ESC-50: ``meta/esc50.csv`` (filename, fold, target, category, ...) and ``audio/``; ``folds`` selects folds."""
    present = _Present("esc50")
    for row in _read_csv(os.path.join(root, "meta", "esc50.csv")):
        if folds is not None and int(row["fold"]) not in folds:
            continue
        path = os.path.join(root, "audio", row["filename"])
        if present(path):
            yield {"audio": path, "task": "sound_event", "prompt": prompt_for("sound_event"),
                   "answer": _label_text(row["category"]), "dataset": "esc50"}
    present.report()


def fsd50k(root: FilePath, split: Literal["train", "val", "eval"]) -> Iterator[dict[str, Any]]:
    """FSD50K: ``FSD50K.ground_truth/{dev,eval}.csv`` (fname, labels[, mids, split]) with ``FSD50K.{dev,eval}_audio/``.

    ``split`` is ``train`` or ``val`` (both from dev.csv's split column) or ``eval``. The answer lists the
    clip's labels, comma-separated, in the csv's order.
    """
    source = "eval" if split == "eval" else "dev"
    present = _Present("fsd50k")
    for row in _read_csv(os.path.join(root, "FSD50K.ground_truth", f"{source}.csv")):
        if source == "dev" and row.get("split") != split:
            continue
        path = os.path.join(root, f"FSD50K.{source}_audio", f"{row['fname']}.wav")
        if present(path):
            labels = ", ".join(_label_text(x) for x in row["labels"].split(","))
            yield {"audio": path, "task": "sound_event", "prompt": prompt_for("sound_event"), "answer": labels,
                   "dataset": "fsd50k"}
    present.report()


def wavcaps(json_path: FilePath, audio_dir: FilePath, ext: str = ".flac") -> Iterator[dict[str, Any]]:
    """WavCaps: a subset's json (``{"data": [{"id", "caption", "duration", ...}]}``) and its audio folder.

    The audio file is ``<audio_dir>/<id without extension><ext>``, as the released flac archives name them.
    """
    if not os.path.isfile(json_path):
        raise FileNotFoundError(f"{json_path}: not found")
    with open(json_path, encoding="utf-8") as f:
        entries = json.load(f)["data"]
    present = _Present("wavcaps")
    for entry in entries:
        path = os.path.join(audio_dir, os.path.splitext(str(entry["id"]))[0] + ext)
        if present(path):
            yield {"audio": path, "task": "caption", "prompt": prompt_for("caption"), "answer": entry["caption"],
                   "duration": entry.get("duration"), "dataset": "wavcaps"}
    present.report()


def labelled_folder(root: FilePath, task: str = "sound_event") -> Iterator[dict[str, Any]]:
    """A folder of audio whose sub-folder names are the labels (``root/dog/1.wav`` -> "dog")."""
    for label in sorted(os.listdir(root)):
        folder = os.path.join(root, label)
        if not os.path.isdir(folder):
            continue
        for dirpath, _, names in sorted(os.walk(folder)):
            for name in sorted(names):
                if name.lower().endswith(AUDIO_EXTENSIONS):
                    yield {"audio": os.path.join(dirpath, name), "task": task, "prompt": prompt_for(task),
                           "answer": _label_text(label), "dataset": os.path.basename(os.path.normpath(root))}


def urbansound8k(root: FilePath, folds: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """UrbanSound8K: ``metadata/UrbanSound8K.csv`` (slice_file_name, fsID, start, end, salience, fold, classID,
    class) and ``audio/fold<N>/``; ``folds`` selects folds (default: all ten, as zero-shot evaluation uses)."""
    present = _Present("urbansound8k")
    for row in _read_csv(os.path.join(root, "metadata", "UrbanSound8K.csv")):
        if folds is not None and int(row["fold"]) not in folds:
            continue
        path = os.path.join(root, "audio", f"fold{int(row['fold'])}", row["slice_file_name"])
        if present(path):
            yield {"audio": path, "task": "sound_event", "prompt": prompt_for("sound_event"),
                   "answer": _label_text(row["class"]), "dataset": "urbansound8k"}
    present.report()


def gtzan(root: FilePath) -> Iterator[dict[str, Any]]:
    """GTZAN: ``genres/<genre>/<genre>.000NN.wav``, a folder per genre (the Kaggle copy's
    ``Data/genres_original/`` is found too); task music_genre."""
    candidates = [os.path.join(root, *p) for p in (("genres",), ("genres_original",), ("Data", "genres_original"))]
    folder = next((c for c in candidates if os.path.isdir(c)), None)
    if folder is None:
        raise FileNotFoundError(f"{root}: no genres/ folder (is GTZAN laid out as its publisher distributes it?)")
    for row in labelled_folder(folder, task="music_genre"):
        yield {**row, "dataset": "gtzan"}


ADAPTERS = {"audiocaps": audiocaps, "clotho": clotho, "clotho_aqa": clotho_aqa, "esc50": esc50, "fsd50k": fsd50k,
            "wavcaps": wavcaps, "folder": labelled_folder, "urbansound8k": urbansound8k, "gtzan": gtzan}
