"""`pengi caption`: caption (or answer one prompt about) files, folders, globs and manifests, resumably."""

from __future__ import annotations

import argparse

from pengi.cli.common import batch_options, decoding_options, model_option, runtime_options
from pengi.cli.generation import run_generation, task_from_args, window_options
from pengi.data.tasks import TASK_PROMPTS

DEFAULT_PROMPT = TASK_PROMPTS["caption"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("caption", parents=[batch_options("captions"), model_option(), decoding_options(),
                                           runtime_options()],
                       help="caption files, folders, globs or manifests (one row per clip, resumable)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT,
                   help=f"prompt for every clip whose manifest row has none (default: {DEFAULT_PROMPT!r})")
    window_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_generation(args, args.prompt, task_from_args(args), "captioned")
