"""`pengi ask`: one question about every clip of files, folders, globs and manifests, resumably."""

from __future__ import annotations

import argparse

from pengi.cli.common import batch_options, decoding_options, model_option, runtime_options
from pengi.cli.generation import run_generation, task_from_args, window_options
from pengi.data.tasks import TASK_PROMPTS, prompt_for
from pengi.errors import PengiInputError


def question_prompt(question: str) -> str:
    """The prompt for a question: Pengi's ``"question: ..."``; a task prompt or a ready prompt stays as it is."""
    text = question.strip()
    if not text:
        raise PengiInputError("question", "prompt is empty")
    if text in TASK_PROMPTS.values() or text.lower().startswith("question:"):
        return text
    return prompt_for("aqa", question=text)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", parents=[batch_options("answers"), model_option(), decoding_options(),
                                       runtime_options()],
                       help="ask a question about audio clips (one row per clip, resumable)",
                       description="The last argument is the question, e.g. "
                                   "`pengi ask clips/ \"how many sounds are there?\"`; it is asked as Pengi's "
                                   "prompt \"question: ...\" (a task prompt such as \"this is a sound of\" is used "
                                   "as it is).")
    p.add_argument("question", help="the question (or a task prompt)")
    window_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_generation(args, question_prompt(args.question), task_from_args(args), "answered")
