"""`pengi manifest`: a training or evaluation manifest from a corpus laid out as its publisher distributes it.

Options are ``KEY=VALUE`` pairs read by the adapter's signature (`pengi.data.adapters`): a bad key or value fails
with one line naming it and what it accepts, before anything is read, and no manifest is written unless every
row was. Corpus folders are made absolute, so the manifest's audio paths resolve wherever it is read from.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import itertools
import logging
import os
import types
import typing
from typing import Any

from pengi.data.adapters import ADAPTERS, FilePath
from pengi.data.manifest import write_manifest
from pengi.errors import PengiInputError

log = logging.getLogger("pengi")


def option_types(adapter) -> dict[str, tuple[Any, bool]]:
    """Each option of ``adapter``: its type hint and whether it must be given."""
    hints = typing.get_type_hints(adapter)
    return {name: (hints.get(name, str), param.default is inspect.Parameter.empty)
            for name, param in inspect.signature(adapter).parameters.items()}


def describe_type(hint: Any) -> str:
    if hint is FilePath:
        return "a path"
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(describe_type(h) for h in typing.get_args(hint) if h is not type(None))
    if typing.get_origin(hint) is list:
        return "a list of whole numbers (5, 1,2,3 or [1,2,3])"
    return {int: "a whole number", float: "a number"}.get(hint, "text")


def parse_value(key: str, text: str, hint: Any) -> Any:
    """``text`` as the type ``hint`` names, or a `PengiInputError` naming ``key`` and what it accepts."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        hint = next(h for h in typing.get_args(hint) if h is not type(None))
        origin = typing.get_origin(hint)
    try:
        if hint is FilePath:
            return os.path.abspath(os.path.expanduser(text))
        if origin is typing.Literal:
            if text not in typing.get_args(hint):
                raise ValueError
            return text
        if origin is list:
            items = [x.strip() for x in text.strip().strip("[]").split(",") if x.strip()]
            if not items:
                raise ValueError
            return [int(x) for x in items]
        if hint in (int, float):
            return hint(text)
        return text
    except ValueError:
        raise PengiInputError(key, f"got {text!r}; it takes {describe_type(hint)}") from None


def adapter_options(corpus: str, items: list[str]) -> dict[str, Any]:
    """The KEY=VALUE items as the adapter's keyword arguments, each checked."""
    options = option_types(ADAPTERS[corpus])
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise PengiInputError(item, "options are KEY=VALUE")
        if key not in options:
            close = difflib.get_close_matches(key, list(options), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise PengiInputError(key, f"is not an option of {corpus} (its options: {', '.join(options)}){hint}")
        kwargs[key] = parse_value(key, value, options[key][0])
    missing = [name for name, (_, required) in options.items() if required and name not in kwargs]
    if missing:
        raise PengiInputError(corpus, f"needs {', '.join(f'{m}=...' for m in missing)}")
    return kwargs


def usage() -> str:
    lines = []
    for name, adapter in ADAPTERS.items():
        opts = [f"{key}=<{describe_type(hint)}>" + ("" if required else " (optional)")
                for key, (hint, required) in option_types(adapter).items()]
        lines.append(f"  {name}: {'; '.join(opts)}")
    return "options per corpus:\n" + "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("manifest", help="write a training/evaluation manifest from a corpus in its publisher's layout",
                       description=__doc__.split("\n\n")[0], epilog=usage(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", choices=sorted(ADAPTERS))
    p.add_argument("options", nargs="*", help="adapter options, e.g. root=/data/ESC-50 folds=1,2,3,4")
    p.add_argument("--out", required=True, help="manifest to write (.jsonl or .csv)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    kwargs = adapter_options(args.corpus, args.options)
    rows = ADAPTERS[args.corpus](**kwargs)
    try:
        first = next(rows, None)  # the corpus' metadata is read here, before anything is written
        if first is None:
            raise PengiInputError(args.corpus, "no rows: no audio of the corpus was found where the options point")
        n = write_manifest(itertools.chain([first], rows), args.out)
    except PengiInputError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise PengiInputError(args.corpus, f"cannot read the corpus with {kwargs}: {err}") from None
    log.info("wrote %d rows to %s", n, args.out)
    return 0
