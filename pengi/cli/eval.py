"""`pengi eval`: evaluate a Pengi model on a benchmark (a shipped one by name, or a YAML file)."""

from __future__ import annotations

import argparse

from pengi.cli.common import load_model, model_name, model_option, positive_int, runtime_options
from pengi.evaluation.specs import shipped_benchmarks


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", parents=[model_option(), runtime_options()],
                       help="evaluate a model on a benchmark (shipped: " + ", ".join(shipped_benchmarks()) + ")")
    p.add_argument("--benchmark", required=True,
                   help="a shipped benchmark's name (" + ", ".join(shipped_benchmarks()) + ") or a YAML file")
    p.add_argument("--out", required=True, help="folder for predictions (resumable), results.json/.md and plots")
    p.add_argument("--data-root", default=None,
                   help="folder that relative manifest paths start from (default: $PENGI_DATA_ROOT, else the "
                        "benchmark's data_root, else ./data)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="clips per batch (default: the benchmark's)")
    p.add_argument("--num-beams", type=positive_int, default=None, help="beam width (default: the benchmark's)")
    p.add_argument("--max-new-tokens", type=positive_int, default=None)
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N clips of each dataset")
    p.add_argument("--only", nargs="+", default=None, metavar="DATASET", help="evaluate only these datasets")
    p.add_argument("--overwrite", action="store_true", help="discard predictions made with other settings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pengi.evaluation.runner import run_benchmark, select_datasets  # evaluate, matplotlib: only for this command
    from pengi.evaluation.specs import load_benchmark

    bench = load_benchmark(args.benchmark, args.data_root)
    overrides = {"batch_size": args.batch_size, "num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens,
                 "limit": args.limit}
    select_datasets(bench, args.only, overrides)  # a typo or a missing manifest fails before the model loads
    model = load_model(args)
    results = run_benchmark(model, bench, args.out, model_name=model_name(args), overrides=overrides,
                            only=args.only, overwrite=args.overwrite, quiet=args.quiet)
    if not args.quiet:
        with open(f"{args.out}/results.md", encoding="utf-8") as f:
            print(f.read())
    failed = sum(entry["num_failed"] for entry in results["datasets"].values())
    return 1 if failed else 0
