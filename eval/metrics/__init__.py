"""pengi's evaluation metrics, each a local 🤗 `evaluate` module: a folder holding a script of the same name.

`evaluate.load("bleu")` fetches the metric from the Hub, which fails offline and can change under you; these
load from their folder and fetch nothing:

    evaluate.load("eval/metrics/caption_metrics")             # BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE, SPIDEr
    evaluate.load("eval/metrics/audio_qa")                    # ClothoAQA-style exact-match accuracy
    evaluate.load("eval/metrics/classification")              # single-label accuracy
    evaluate.load("eval/metrics/classification", "multilabel")  # mAP
    evaluate.load("eval/metrics/retrieval")                   # CLAP text<->audio R@1/5/10, mAP@10

or, from Python with the repository root importable, ``eval.metrics.load("retrieval")``.
Each script only imports libraries, never this package, because `evaluate` copies the script alone into its
module cache before importing it.
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
NAMES = ("caption_metrics", "audio_qa", "classification", "retrieval")


def metric_path(name: str) -> str:
    """The folder of metric ``name``, ready for `evaluate.load`."""
    if name not in NAMES:
        raise ValueError(f"unknown metric {name!r}; pengi's metrics are {', '.join(NAMES)}")
    return str(METRICS_DIR / name)


def load(name: str, config_name: str | None = None, **kwargs):
    """`evaluate.load` of one of pengi's local metrics (``config_name`` "multilabel" for classification mAP)."""
    import evaluate

    return evaluate.load(metric_path(name), config_name, **kwargs)
