"""Audio classification metrics: single-label accuracy and multi-label mean average precision (mAP).

Single label (ESC-50, UrbanSound8K, ...), the default configuration: accuracy, from predicted labels (ints or
strings) or from per-class scores (the arg-max is the prediction; on a tie the lowest class index wins).

Multi-label (AudioSet, FSD50K, ...), configuration "multilabel": mAP, the mean over classes of the average
precision of ranking all clips by that class's score, as AudioSet papers compute it (scikit-learn's
``average_precision_score`` per class, then the mean). AP is the sum over score thresholds of
(recall step) x (precision there); clips with equal scores form one threshold, so tied scores are not ordered
by accident. Predictions are per-class scores, or 0/1 predicted labels (then AP is that of a hard decision).
A class with no positive clip in the references has no AP (recall is undefined): it is skipped, listed in
"skipped_classes", and a warning says so, rather than counted as 0 or 1 and shifting the mean.
"""

from __future__ import annotations

import warnings

import datasets
import evaluate
import numpy as np

_DESCRIPTION = __doc__

_CITATION = """\
@inproceedings{gemmeke2017audio,
  title={Audio Set: An ontology and human-labeled dataset for audio events},
  author={Gemmeke, Jort F. and Ellis, Daniel P. W. and Freedman, Dylan and Jansen, Aren and Lawrence, Wade and
          Moore, R. Channing and Plakal, Manoj and Ritter, Marvin},
  booktitle={ICASSP},
  year={2017}
}
"""

_KWARGS_DESCRIPTION = """
Args (single label, `evaluate.load(path)`):
    predictions: a label per clip (`int` or `str`), or a list of per-class scores per clip.
    references: the true label per clip (`int` class index when predictions are scores).
Args (multi-label, `evaluate.load(path, "multilabel")`):
    predictions (`list` of `list` of `float`): per-class scores per clip, or 0/1 predicted labels.
    references (`list` of `list` of `int`): 0/1 per class per clip (multi-hot).
    label_names (`list` of `str`, optional): class names, used in "skipped_classes" instead of indices.
Returns:
    single label: {"accuracy": float, "num_examples": int}
    multi-label: {"mAP": float (None if no class has a positive), "average_precision": per-class AP (None for a
    skipped class), "num_classes": int, "num_evaluated_classes": int, "skipped_classes": list}
Examples:
    >>> acc = evaluate.load("pengi/evaluation/metrics/classification")
    >>> acc.compute(predictions=[[0.1, 0.9], [0.8, 0.2]], references=[1, 1])["accuracy"]
    0.5
    >>> evaluate.load("pengi/evaluation/metrics/classification", "multilabel").compute(
    ...     predictions=[[0.9, 0.1], [0.2, 0.8]], references=[[1, 0], [0, 1]])["mAP"]
    1.0
"""


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP of one class: sum over distinct score thresholds of (recall step) x (precision at that threshold).

    Equal to scikit-learn's ``average_precision_score``. ``labels`` must contain at least one positive.
    """
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # end of each run of equal scores
    true_pos = np.cumsum(labels)[last_of_group]
    precision = true_pos / (last_of_group + 1)
    recall_step = np.diff(np.r_[0, true_pos]) / true_pos[-1]
    return float(np.sum(recall_step * precision))


def single_label_accuracy(predictions: list, references: list) -> dict:
    """Accuracy from labels, or from per-class scores (arg-max)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no examples")
    if isinstance(predictions[0], (list, tuple, np.ndarray)):
        scores = _as_matrix(predictions, "predictions")
        predictions = scores.argmax(axis=1).tolist()
    hits = [p == r for p, r in zip(predictions, references)]
    return {"accuracy": sum(hits) / len(hits), "num_examples": len(hits)}


def multilabel_map(predictions, references, label_names: list[str] | None = None) -> dict:
    """Mean over classes with at least one positive of the per-class `average_precision`."""
    scores = _as_matrix(predictions, "predictions")
    targets = _as_matrix(references, "references")
    if scores.shape != targets.shape:
        raise ValueError(f"predictions are {scores.shape} (clips x classes) but references are {targets.shape}")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("references must be 0/1 (multi-hot) per class")
    n_classes = scores.shape[1]
    if label_names is not None and len(label_names) != n_classes:
        raise ValueError(f"{len(label_names)} label names for {n_classes} classes")
    per_class: list[float | None] = []
    skipped = []
    for c in range(n_classes):
        if targets[:, c].sum() == 0:
            per_class.append(None)
            skipped.append(c if label_names is None else label_names[c])
        else:
            per_class.append(average_precision(scores[:, c], targets[:, c]))
    evaluated = [ap for ap in per_class if ap is not None]
    if skipped:
        warnings.warn(f"mAP skips {len(skipped)} of {n_classes} classes with no positive reference: {skipped}",
                      stacklevel=2)
    return {
        "mAP": float(np.mean(evaluated)) if evaluated else None,
        "average_precision": per_class,
        "num_classes": n_classes,
        "num_evaluated_classes": len(evaluated),
        "skipped_classes": skipped,
    }


def _as_matrix(rows, name: str) -> np.ndarray:
    try:
        matrix = np.asarray([np.asarray(r, dtype=np.float64) for r in rows])
    except ValueError as e:
        raise ValueError(f"{name}: every row must have one value per class") from e
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise ValueError(f"{name}: expected a (clips x classes) matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return matrix


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Classification(evaluate.Metric):
    """Single-label accuracy (default) or multi-label mAP (config "multilabel")."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name == "multilabel":
            features = datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                          "references": datasets.Sequence(datasets.Value("int64"))})
        else:
            # Strings first: evaluate takes the first format that accepts the first example, and int64 would
            # accept the string "3".
            features = [
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
                datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                   "references": datasets.Value("int64")}),
            ]
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=features,
        )

    def _compute(self, predictions, references, label_names=None) -> dict:
        if self.config_name == "multilabel":
            return multilabel_map(predictions, references, label_names)
        return single_label_accuracy(list(predictions), list(references))
