"""The human-readable side of `pengi eval`: ``results.md`` (our numbers beside the published ones), a bar chart
of the main scores and a confusion matrix per single-label classification method."""

from __future__ import annotations

import os
from typing import Any

# The metrics shown for each kind of task, in this order; reference metrics are always shown too.
HEADLINE = {
    "caption": ["BLEU_4", "METEOR", "ROUGE_L", "CIDEr-D", "SPICE", "SPIDEr"],
    "aqa": ["accuracy", "yes_no_accuracy", "other_accuracy"],
    "open_aqa": ["exact_match", "yes_no_accuracy", "similarity"],
    "classification": ["accuracy_similarity", "accuracy_likelihood", "generation_exact_match"],
    "multilabel": ["mAP_similarity", "mAP_likelihood"],
}
PLOTTED = {"caption": ["CIDEr-D", "SPICE", "SPIDEr"], "aqa": ["accuracy", "yes_no_accuracy"],
           "open_aqa": ["exact_match", "similarity"], "classification": ["accuracy_similarity", "accuracy_likelihood"],
           "multilabel": ["mAP_similarity", "mAP_likelihood"]}


def rows_of(entry: dict[str, Any]) -> list[tuple[str, float | None, float | None]]:
    """(metric, ours, published) for the table: the headline metrics the run has, then other referenced ones."""
    names = [m for m in HEADLINE[entry["kind"]] if m in entry["metrics"] or m in entry["reference"]]
    names += [m for m in entry["reference"] if m not in names]
    return [(m, entry["metrics"].get(m), entry["reference"].get(m)) for m in names]


def fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown(results: dict[str, Any]) -> str:
    ref = results.get("reference_name") or "published"
    lines = [f"# {results['benchmark']}", "", f"Model: `{results['model']}`", "",
             f"| dataset | task | clips | metric | ours | {ref} |", "|---|---|---|---|---|---|"]
    notes = []
    for name, entry in results["datasets"].items():
        clips = str(entry["num_clips"] - entry["num_failed"])
        for metric, ours, published in rows_of(entry):
            lines.append(f"| {name} | {entry['kind']} | {clips} | {metric} | {fmt(ours)} | {fmt(published)} |")
        for metric, reason in (entry["metrics"].get("unavailable") or {}).items():
            notes.append(f"- {name}: {metric} unavailable: {reason}")
        if entry["num_failed"]:
            notes.append(f"- {name}: {entry['num_failed']} of {entry['num_clips']} clips could not be read")
    lines += ["", "Published numbers come from the papers' own protocols, which may differ from this run's "
              "(prompts, decoding, class mapping, splits)."]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _pyplot() -> Any:
    """pyplot on the Agg backend: files only, no display needed (servers, CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(results: dict[str, Any], path: str) -> None:
    """One panel per dataset, each on its own scale (CIDEr-D runs to 10, accuracies to 1); published numbers
    are the hatched bars beside ours."""
    plt = _pyplot()
    panels = []
    for name, entry in results["datasets"].items():
        metrics = PLOTTED[entry["kind"]] + [m for m in entry["reference"] if m not in PLOTTED[entry["kind"]]]
        bars = [(m, entry["metrics"].get(m), entry["reference"].get(m)) for m in metrics]
        bars = [b for b in bars if isinstance(b[1], (int, float))]
        if bars:
            panels.append((name, bars))
    cols = min(len(panels), 4) or 1
    rows = (len(panels) + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
    reference_name = results.get("reference_name") or "published"
    for ax, (name, bars) in zip(axes.flat, panels):
        xs = range(len(bars))
        ax.bar([x - 0.2 for x in xs], [b[1] for b in bars], width=0.4, label="ours")
        published = [(x + 0.2, b[2]) for x, b in zip(xs, bars) if b[2] is not None]
        if published:
            ax.bar(*zip(*published), width=0.4, hatch="//", alpha=0.7, label=reference_name)
        top = max([b[1] for b in bars] + [p for _, p in published] + [1e-9])
        ax.set_ylim(min(0.0, *[b[1] for b in bars]), top * 1.3)  # room for the legend above the bars
        ax.set_xlim(-0.6, len(bars) - 0.4)
        ax.legend(fontsize=7, loc="upper right")
        ax.set_xticks(list(xs), [b[0] for b in bars], rotation=30, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{results['benchmark']}: {results['model']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def confusion_matrix(true_idx: list[int], pred_idx: list[int], classes: list[str], title: str, path: str) -> None:
    """Rows are true classes, columns predictions; a column "(no answer)" counts empty generations if any."""
    import numpy as np

    plt = _pyplot()

    columns = classes + (["(no answer)"] if min(pred_idx, default=0) < 0 else [])
    counts = np.zeros((len(classes), len(columns)), dtype=int)
    for t, p in zip(true_idx, pred_idx):
        counts[t, p if p >= 0 else len(classes)] += 1
    size = max(4.0, 0.28 * len(columns) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(columns) <= 20:
        for (i, j), n in np.ndenumerate(counts):
            if n:
                ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                        color="white" if n > counts.max() / 2 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results: dict[str, Any], plots: dict[str, Any], out_dir: str) -> None:
    """``results.md``, ``scores.png`` and ``confusion_<dataset>_<method>.png`` in ``out_dir``."""
    with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(markdown(results))
    bar_chart(results, os.path.join(out_dir, "scores.png"))
    for name, extra in plots.items():
        classes = results["datasets"][name].get("classes")
        for key, (true_idx, pred_idx) in extra.items():
            method = key.removeprefix("confusion_")
            confusion_matrix(true_idx, pred_idx, classes, f"{name} ({method})",
                             os.path.join(out_dir, f"confusion_{name}_{method}.png"))
