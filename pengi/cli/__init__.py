"""The `pengi` command. One module per subcommand (`pengi.cli.caption`, ...), each with ``add_parser(sub)`` and
``run(args) -> exit status``; the options they share are in `pengi.cli.common`.

Exit status: 0 done, 1 some inputs failed (each reported, the others done), 2 the command could not run.
"""

from __future__ import annotations

import argparse
import importlib
import logging

from pengi.cli.common import set_threads, setup_logging
from pengi.errors import PengiInputError

log = logging.getLogger("pengi")
COMMANDS = ("caption", "ask", "describe", "eval", "manifest", "zero_shot", "embed", "retrieve", "merge", "convert",
            "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pengi", description="Audio-language models: caption and question audio, "
                                                               "classify, embed and search audio with CLAP.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"pengi.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "quiet", False))
    set_threads(args)
    try:
        return args.func(args)
    except (PengiInputError, OSError, ValueError) as err:  # the command could not run: nothing was processed
        log.error("%s", err)
        return 2
