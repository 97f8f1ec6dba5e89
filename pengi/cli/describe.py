"""`pengi describe`: Pengi's three descriptions of each clip (caption, metadata, sound events), resumably."""

from __future__ import annotations

import argparse

from pengi.cli.common import batch_options, decoding_options, model_option, runtime_options
from pengi.cli.generation import run_generation, task_from_args
from pengi.data.tasks import DESCRIBE_PROMPTS


def add_parser(sub: argparse._SubParsersAction) -> None:
    fields = ", ".join(f"{field} ({prompt!r})" for field, prompt in DESCRIBE_PROMPTS.items())
    p = sub.add_parser("describe", parents=[batch_options("descriptions"), model_option(), decoding_options(),
                                            runtime_options()],
                       help="caption, metadata and sound events of each clip (one row per clip, resumable)",
                       description=f"Each row holds {fields}.")
    p.set_defaults(func=run, windows=False, hop=None)


def run(args: argparse.Namespace) -> int:
    return run_generation(args, "", task_from_args(args, fields=dict(DESCRIBE_PROMPTS)), "described")
