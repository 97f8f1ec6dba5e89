"""pengi's evaluation metrics, each a local 🤗 `evaluate` module: a folder holding a script of the same name.

`evaluate.load("bleu")` fetches the metric from the Hub, which fails offline and can change under you; these
load from their folder and fetch nothing:

    from pengi.evaluation.metrics import load
    load("caption_metrics")             # BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE, SPIDEr
    load("audio_qa")                    # ClothoAQA-style exact-match accuracy
    load("classification")              # single-label accuracy
    load("classification", "multilabel")  # mAP
    load("retrieval")                   # CLAP text<->audio R@1/5/10, mAP@10

which is ``evaluate.load(metric_path(name))``: the folders ship inside the package, so this works from an
installed wheel too. Each script only imports libraries, never pengi, because `evaluate` copies the script alone
into its module cache before importing it.
"""

from __future__ import annotations

import functools
from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
NAMES = ("caption_metrics", "audio_qa", "classification", "retrieval")


def metric_path(name: str) -> str:
    """The folder of metric ``name``, ready for `evaluate.load`."""
    if name not in NAMES:
        raise ValueError(f"unknown metric {name!r}; pengi's metrics are {', '.join(NAMES)}")
    return str(METRICS_DIR / name)


@functools.cache
def load(name: str, config_name: str | None = None, **kwargs):
    """`evaluate.load` of one of pengi's local metrics (``config_name`` "multilabel" for classification mAP)."""
    import evaluate

    return evaluate.load(metric_path(name), config_name, **kwargs)
