"""`pengi serve`: a model behind an OpenAI-compatible HTTP API with dynamic batching and a web page
(`pengi.serving`; needs the ``serve`` extra)."""

from __future__ import annotations

import argparse

from pengi.serving import cli as serving


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP: OpenAI-compatible API, batching, a web page",
                       description=serving.__doc__.split("\n\n")[0])
    serving.add_arguments(p)
    p.set_defaults(func=serving.run)
