"""Benchmarks that print ratios against a baseline measured in the same run; run from the repository root as
``python -m perf.<script>`` (they use the test suite's reference code in ``tests/``). Figures: docs/perf.md."""

import transformers

transformers.utils.logging.disable_progress_bar()  # no loading bars in the benchmarks' logs
