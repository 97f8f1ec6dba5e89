"""Benchmark files: which manifests to evaluate, as which kind of task, with which prompt and decoding.

A benchmark is a YAML file; pengi ships one per published benchmark (``pengi/evaluation/benchmarks/``), found
by name (``clotho``), and any other file is given by its path::

    name: clotho
    data_root: /data/manifests       # relative manifests are found here (default: ./data)
    reference_name: Pengi (paper)    # column title of the published numbers in results.md
    defaults: {batch_size: 16, num_beams: 3, max_new_tokens: 30}
    datasets:
      - name: clotho_evaluation
        manifest: clotho/evaluation.jsonl
        kind: caption                # caption | aqa | open_aqa | classification | multilabel
        reference: {CIDEr-D: 0.416, SPICE: 0.126, SPIDEr: 0.271}

A dataset's keys are the fields of `DatasetSpec`; a key that is not one is an error, so a typo cannot be
silently ignored. ``--data-root`` (or ``$PENGI_DATA_ROOT``) replaces ``data_root``, so the same files serve
wherever the corpora live.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

KINDS = ("caption", "aqa", "open_aqa", "classification", "multilabel")
METHODS = ("similarity", "likelihood")
DATA_ROOT_ENV = "PENGI_DATA_ROOT"
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmarks")


def shipped_benchmarks() -> list[str]:
    """The names of the benchmark files shipped with pengi."""
    return sorted(f.removesuffix(".yaml") for f in os.listdir(SHIPPED_DIR) if f.endswith(".yaml"))


def find_benchmark(name_or_path: str | os.PathLike) -> str:
    """A benchmark file's path: ``name_or_path`` itself when it is a file, else the shipped benchmark of that
    name (``clotho`` or ``clotho.yaml``)."""
    path = os.fspath(name_or_path)
    if os.path.isfile(path):
        return path
    shipped = os.path.join(SHIPPED_DIR, os.path.basename(path).removesuffix(".yaml") + ".yaml")
    if os.sep not in path and os.path.isfile(shipped):
        return shipped
    raise FileNotFoundError(f"{path}: no such benchmark file, and not the name of one pengi ships "
                            f"({', '.join(shipped_benchmarks())})")


@dataclass
class DatasetSpec:
    """One evaluated manifest.

    ``prompt`` replaces the manifest's prompts (which default to `pengi.data.tasks`' prompt of each row's
    task); not for question answering, whose prompt is the question. ``where`` keeps the rows whose column
    has one of the listed values (``{prompt: ["generate audio caption"]}``). ``classes`` defaults to the
    sorted distinct answers (multi-label: the distinct labels, split at ``label_separator``). ``limit``
    evaluates only the first clips, for a quick look. ``reference`` holds published numbers by metric name.
    """

    name: str
    manifest: str
    kind: str
    prompt: str | None = None
    where: dict[str, list[str]] = field(default_factory=dict)
    classes: list[str] | None = None
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    label_separator: str = ","
    num_beams: int | None = None
    max_new_tokens: int | None = None
    batch_size: int = 8
    score_batch_size: int = 128
    limit: int | None = None
    spice: bool = True
    reference: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"dataset {self.name!r}"
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.prompt is not None and self.kind in ("aqa", "open_aqa"):
            raise ValueError(f"{where}: question answering takes its prompts (the questions) from the manifest")
        unknown = set(self.methods) - set(METHODS)
        if unknown or not self.methods:
            raise ValueError(f"{where}: methods must be some of {', '.join(METHODS)}, got {self.methods}")
        if self.batch_size < 1 or self.score_batch_size < 1:
            raise ValueError(f"{where}: batch sizes must be at least 1")


@dataclass
class Benchmark:
    name: str
    path: str
    datasets: list[DatasetSpec]
    reference_name: str = "published"


def load_benchmark(name_or_path: str | os.PathLike, data_root: str | None = None) -> Benchmark:
    """Read a benchmark file (a path, or the name of a shipped one); relative manifest paths are resolved against
    ``data_root`` (argument, then ``$PENGI_DATA_ROOT``, then the file's ``data_root:``, relative to the file,
    then ``./data``)."""
    path = find_benchmark(name_or_path)
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    known = {"name", "data_root", "reference_name", "defaults", "datasets"}
    if set(doc) - known:
        raise ValueError(f"{path}: unknown keys {sorted(set(doc) - known)}; a benchmark has {sorted(known)}")
    folder = os.path.dirname(os.path.abspath(path))
    root = data_root or os.environ.get(DATA_ROOT_ENV) or (os.path.join(folder, doc["data_root"])
                                                          if doc.get("data_root") else "data")
    allowed = {f.name for f in fields(DatasetSpec)}
    specs = []
    for n, entry in enumerate(doc.get("datasets") or [], start=1):
        merged: dict[str, Any] = {**(doc.get("defaults") or {}), **entry}
        bad = set(merged) - allowed
        if bad:
            raise ValueError(f"{path}: dataset #{n} has unknown keys {sorted(bad)}; allowed: {sorted(allowed)}")
        missing = {"name", "manifest", "kind"} - set(merged)
        if missing:
            raise ValueError(f"{path}: dataset #{n} needs {sorted(missing)}")
        merged["manifest"] = os.path.normpath(os.path.join(root, os.path.expanduser(merged["manifest"])))
        specs.append(DatasetSpec(**merged))
    if not specs:
        raise ValueError(f"{path}: no datasets listed")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: dataset names must be unique, got {names}")
    name = doc.get("name") or os.path.splitext(os.path.basename(path))[0]
    return Benchmark(name, os.path.abspath(path), specs, doc.get("reference_name") or "published")
