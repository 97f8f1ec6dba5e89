"""`pengi eval`: run a benchmark file's datasets through a model, cache the predictions, score them.

For each dataset the manifest rows are grouped into clips (one prediction per clip and prompt; the rows'
answers become its references, e.g. Clotho's five captions), the model generates an answer for each clip
and, for classification with the likelihood method, scores every class name. Predictions are appended to
``OUT/predictions/<dataset>.jsonl`` with `ResultWriter` as each batch finishes, so an interrupted run
continues where it stopped; a ``<dataset>.settings.json`` beside it records what produced them, and a rerun
with other settings stops rather than mixing the two. Metrics come from the local `evaluate` modules shipped
in `pengi.evaluation.metrics` and go to ``OUT/results.json``, with ``results.md`` and plots from
`pengi.evaluation.report`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from pengi.batch import Job, ResultWriter
from pengi.batch.local import run_local
from pengi.data.manifest import load_manifest
from pengi.errors import PengiInputError
from pengi.evaluation.metrics import load as load_metric
from pengi.evaluation.specs import Benchmark, DatasetSpec
from pengi.models.pengi import scoring
from pengi.models.pengi.modeling_pengi import Pengi

log = logging.getLogger("pengi")
CLASSIFICATION = ("classification", "multilabel")
PREDICTION_FIELDS = ["audio", "prompt", "text", "likelihood", "answers", "error"]


@dataclass
class Item:
    """One clip (or excerpt) and prompt to answer, with its reference answers from the manifest."""

    key: str  # the audio path, plus "@offset+duration" for an excerpt: the id of its prediction row
    audio: str
    offset: float
    duration: float | None
    prompt: str
    answers: list[str]


def load_items(spec: DatasetSpec) -> list[Item]:
    """Manifest rows kept by ``spec.where``, grouped by (clip, prompt) in first-seen order."""
    groups: dict[tuple[str, str], Item] = {}
    where = {col: [values] if isinstance(values, str) else list(values) for col, values in spec.where.items()}
    for row in load_manifest(spec.manifest):
        if any(row.get(col) not in values for col, values in where.items()):
            continue
        offset, duration = row.get("offset") or 0.0, row.get("duration")
        key = row["audio"] + (f"@{offset:g}+{duration:g}" if duration is not None else f"@{offset:g}" if offset else "")
        prompt = spec.prompt or row["prompt"]
        if (key, prompt) in groups:
            groups[key, prompt].answers.append(row["answer"])
        else:
            groups[key, prompt] = Item(key, row["audio"], offset, duration, prompt, [row["answer"]])
    if not groups:
        raise ValueError(f"{spec.manifest}: no rows left for dataset {spec.name!r} (where: {spec.where})")
    return list(groups.values())


def labels_of(item: Item, spec: DatasetSpec) -> list[str]:
    """The clip's true label (single-label: its first answer) or labels (multi-label: split answers)."""
    if spec.kind != "multilabel":
        return [item.answers[0].strip()]
    labels = [x.strip() for a in item.answers for x in a.split(spec.label_separator)]
    return list(dict.fromkeys(x for x in labels if x))


def class_list(spec: DatasetSpec, items: list[Item]) -> list[str]:
    """The benchmark's classes, or the sorted distinct labels of the manifest; every label must be a class."""
    labels = {x for item in items for x in labels_of(item, spec)}
    if spec.classes is None:
        return sorted(labels)
    unknown = labels - set(spec.classes)
    if unknown:
        raise ValueError(f"dataset {spec.name!r}: answers not in its class list: {sorted(unknown)[:10]}")
    return list(spec.classes)


# ---------------------------------------------------------------------------------------------- predictions
def decoding(model: Pengi, spec: DatasetSpec) -> dict[str, int]:
    return {"num_beams": spec.num_beams or model.config.num_beams,
            "max_new_tokens": spec.max_new_tokens or model.config.max_new_tokens}


def uses_generation(spec: DatasetSpec) -> bool:
    return spec.kind not in CLASSIFICATION or "similarity" in spec.methods


def uses_likelihood(spec: DatasetSpec) -> bool:
    return spec.kind in CLASSIFICATION and "likelihood" in spec.methods


def prediction_settings(model: Pengi, model_name: str, spec: DatasetSpec, classes: list[str] | None) -> dict:
    """What determines a prediction row: a cached row made under other settings must not be reused."""
    return {"model": model_name, "dtype": str(model.dtype).removeprefix("torch."),
            "generation": decoding(model, spec) if uses_generation(spec) else None,
            "likelihood_classes": classes if uses_likelihood(spec) else None}


def check_settings(path: str, settings: dict, overwrite: bool) -> None:
    """Record the settings beside the predictions; stop if earlier predictions were made otherwise."""
    settings_path = path.removesuffix(".jsonl") + ".settings.json"
    if os.path.exists(settings_path) and os.path.exists(path):
        with open(settings_path, encoding="utf-8") as f:
            old = json.load(f)
        if old != settings and not overwrite:
            changed = sorted(k for k in settings if old.get(k) != settings[k])
            raise ValueError(f"{path} holds predictions made with other settings ({', '.join(changed)}); "
                             "use --overwrite to start again, or another --out")
        if old != settings:
            os.remove(path)
    elif overwrite and os.path.exists(path):
        os.remove(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(settings_path, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=1)


def predict(model: Pengi, spec: DatasetSpec, items: list[Item], classes: list[str] | None, path: str,
            quiet: bool = False) -> None:
    """Write a row per clip not yet in ``path``: generated ``text`` and/or per-class ``likelihood``, and the
    reference ``answers`` for reading the file by eye. A clip that failed before is tried again and its row
    replaced."""
    proc = model._require_processor()
    by_job = {Job(item.key, item.prompt): item for item in items}

    def load(job: Job) -> torch.Tensor:
        item = by_job[job]
        return proc.clip(proc.load(item.audio, offset=item.offset, duration=item.duration))

    def process(loaded: list[tuple[Job, Any]]) -> list[dict[str, Any]]:
        return predict_batch(model, spec, [(by_job[job], wave) for job, wave in loaded], classes)

    with ResultWriter(path, PREDICTION_FIELDS) as writer:
        run_local(list(by_job), writer, load, process, output=path, batch_size=spec.batch_size, desc=spec.name,
                  quiet=quiet)


def predict_batch(model: Pengi, spec: DatasetSpec, loaded: list[tuple[Item, Any]],
                  classes: list[str] | None) -> list[dict[str, Any]]:
    proc = model._require_processor()
    good = [(item, wave) for item, wave in loaded if not isinstance(wave, PengiInputError)]
    outputs: dict[str, dict[str, Any]] = {item.key + "\n" + item.prompt: {} for item, _ in good}
    if good:
        enc = proc.prompts([item.prompt for item, _ in good])
        with torch.inference_mode():
            audio = proc.batch([wave for _, wave in good])  # + waveform_lengths for a variable-length tower
            prefix = model.prefix(audio["waveforms"], waveform_lengths=audio.get("waveform_lengths"), **enc)
        if uses_generation(spec):
            ids, _ = model.generate_from_prefix(prefix, **decoding(model, spec))
            for out, text in zip(outputs.values(), proc.decode(ids)):
                out["text"] = text
        if uses_likelihood(spec):
            scores = scoring.class_log_likelihoods_from_prefix(model, prefix, classes, spec.score_batch_size)
            for out, row in zip(outputs.values(), scores.tolist()):
                out["likelihood"] = [round(s, 6) for s in row]
    rows = []
    for item, wave in loaded:
        row: dict[str, Any] = {"audio": item.key, "prompt": item.prompt}
        if isinstance(wave, PengiInputError):
            rows.append({**row, "error": wave.problem})
        else:
            rows.append({**row, **outputs[item.key + "\n" + item.prompt], "answers": item.answers})
    return rows


def read_predictions(path: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The prediction row of each (clip, prompt)."""
    result: dict[tuple[str, str], dict[str, Any]] = {}
    if not os.path.exists(path):
        return result
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            result[row["audio"], row["prompt"]] = row
    return result


# ---------------------------------------------------------------------------------------------- metrics
def score(model: Pengi, spec: DatasetSpec, items: list[Item], classes: list[str] | None,
          preds: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics for the clips that have a prediction, and the data behind the plots (confusion matrices)."""
    texts = [p.get("text", "") for p in preds]
    refs = [item.answers for item in items]
    if spec.kind == "caption":
        return load_metric("caption_metrics").compute(predictions=texts, references=refs, spice=spec.spice), {}
    if spec.kind == "aqa":
        return load_metric("audio_qa").compute(predictions=texts, references=refs), {}
    if spec.kind == "open_aqa":
        qa = load_metric("audio_qa").compute(predictions=texts, references=refs)
        similarity = scoring.answer_similarity(model, texts, refs)
        return {"exact_match": qa.pop("accuracy"), **qa, "similarity": sum(similarity) / len(similarity)}, {}
    truth = [labels_of(item, spec) for item in items]
    metrics: dict[str, Any] = {}
    if uses_generation(spec):  # how often the generation is a true label verbatim
        metrics["generation_exact_match"] = sum(t.strip().lower() in [x.lower() for x in labels]
                                                for t, labels in zip(texts, truth)) / len(items)
    likelihood = [p["likelihood"] for p in preds] if "likelihood" in spec.methods else None
    if spec.kind == "multilabel":
        targets = [[int(c in labels) for c in classes] for labels in truth]
        scores = {"likelihood": likelihood}
        if "similarity" in spec.methods:
            scores["similarity"] = scoring.multilabel_similarity(model, texts, classes, spec.label_separator).tolist()
        for method, s in scores.items():
            if s is not None:
                result = load_metric("classification", "multilabel").compute(predictions=s, references=targets,
                                                                              label_names=classes)
                metrics[f"mAP_{method}"] = result["mAP"]
                metrics["num_evaluated_classes"] = result["num_evaluated_classes"]
        return metrics, {}
    index = {c: i for i, c in enumerate(classes)}
    true_idx = [index[labels[0]] for labels in truth]
    predicted = {}
    if "similarity" in spec.methods:
        predicted["similarity"] = scoring.map_to_classes(model, texts, classes)
    if likelihood is not None:
        predicted["likelihood"] = [max(range(len(classes)), key=row.__getitem__) for row in likelihood]
    plots = {}
    for method, pred_idx in predicted.items():
        result = load_metric("classification").compute(
            predictions=[classes[i] if i >= 0 else "" for i in pred_idx], references=[classes[i] for i in true_idx])
        metrics[f"accuracy_{method}"] = result["accuracy"]
        plots[f"confusion_{method}"] = (true_idx, pred_idx)
    return metrics, plots


# ---------------------------------------------------------------------------------------------- the run
def select_datasets(bench: Benchmark, only: list[str] | None = None,
                    overrides: dict[str, Any] | None = None) -> list[DatasetSpec]:
    """The datasets to run, with the command line's overrides applied; fails early on missing manifests."""
    specs = [dataclasses.replace(s, **{k: v for k, v in (overrides or {}).items() if v is not None})
             for s in bench.datasets if not only or s.name in only]
    if only and len(specs) != len(set(only)):
        raise ValueError(f"--only names {sorted(set(only) - {s.name for s in specs})} are not datasets of "
                         f"{bench.path} ({', '.join(s.name for s in bench.datasets)})")
    missing = [s.manifest for s in specs if not os.path.isfile(s.manifest)]
    if missing:
        raise FileNotFoundError(f"manifests not found: {', '.join(sorted(set(missing)))}; write them with the "
                                f"`pengi manifest` commands at the top of {bench.path}, or point --data-root at "
                                "their folder")
    return specs


def run_benchmark(model: Pengi, bench: Benchmark, out_dir: str, model_name: str,
                  overrides: dict[str, Any] | None = None, only: list[str] | None = None, overwrite: bool = False,
                  quiet: bool = False) -> dict[str, Any]:
    """Predict (resumably) and score every dataset of ``bench``; writes results.json, results.md and plots."""
    from pengi.evaluation.report import write_report

    specs = select_datasets(bench, only, overrides)
    model.eval()
    prepared = []
    for spec in specs:
        all_items = load_items(spec)
        classes = class_list(spec, all_items) if spec.kind in CLASSIFICATION else None
        items = all_items[:spec.limit] if spec.limit else all_items
        path = os.path.join(out_dir, "predictions", f"{spec.name}.jsonl")
        check_settings(path, prediction_settings(model, model_name, spec, classes), overwrite)
        prepared.append((spec, items, classes, path))
    for spec, items, classes, path in prepared:
        predict(model, spec, items, classes, path, quiet)

    results: dict[str, Any] = {"benchmark": bench.name, "benchmark_file": bench.path, "model": model_name,
                               "reference_name": bench.reference_name, "datasets": {}}
    plots: dict[str, Any] = {}
    for spec, items, classes, path in prepared:
        preds = read_predictions(path)
        rows = [(item, preds.get((item.key, item.prompt))) for item in items]
        done = [(item, row) for item, row in rows if row is not None and not row.get("error")]
        entry: dict[str, Any] = {"kind": spec.kind, "manifest": spec.manifest, "num_clips": len(items),
                                 "num_failed": len(items) - len(done),
                                 "settings": prediction_settings(model, model_name, spec, classes),
                                 "reference": spec.reference}
        if classes is not None:
            entry["classes"] = classes
        if done:
            entry["metrics"], plots[spec.name] = score(model, spec, [d[0] for d in done], classes, [d[1] for d in done])
        else:
            entry["metrics"] = {}
        if entry["num_failed"]:
            log.warning("%s: %d of %d clips could not be read and are left out of its metrics (see %s)",
                        spec.name, entry["num_failed"], len(items), path)
        results["datasets"][spec.name] = entry
    tmp = os.path.join(out_dir, "results.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, ensure_ascii=False)
    os.replace(tmp, os.path.join(out_dir, "results.json"))
    write_report(results, plots, out_dir)
    return results
