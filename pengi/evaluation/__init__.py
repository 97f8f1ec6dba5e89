"""Evaluation: benchmark files (`specs`, shipped in `benchmarks/`), the resumable runner (`runner`), the report
(`report`), and the local 🤗 `evaluate` metric modules (`metrics`), all shipped inside the package."""

from pengi.evaluation.metrics import load as load_metric

__all__ = ["load_metric"]
