"""Performance scripts that print ratios against a baseline measured in the same run; each is run from the
repository root as a module, ``python -m perf.<name>``, so that it imports pengi and the tests' helpers (``tests/``)
as they are in the checkout. Figures: docs/perf.md."""

import transformers

transformers.utils.logging.disable_progress_bar()  # no loading bars in the benchmarks' logs
