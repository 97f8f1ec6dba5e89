"""Audio question answering accuracy: exact match after ClothoAQA-style normalisation.

ClothoAQA answers are single words or "yes"/"no", and a generative model such as Pengi writes free text, so an
answer is compared with the reference after both are normalised: lower case, punctuation deleted (any Unicode
punctuation, as in SQuAD's answer normalisation, so "Yes." and "yes" match and "it's" becomes "its"), and runs of
whitespace made one space with none at the ends. Anything else must match exactly: "yes it is" is not "yes".

Accuracy is reported overall and split, as ClothoAQA does, into yes/no questions and the others. A question is a
yes/no question when all its reference answers normalise to "yes" or "no". When question types are given (for
example "what", "how many", "is"), accuracy is also reported per type. A question may have several reference
answers (ClothoAQA collects several answers per question); the prediction is right when it matches any of them.
To score each annotator's answer separately instead, pass one row per (question, answer) pair.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict

import datasets
import evaluate

_DESCRIPTION = __doc__

_CITATION = """\
@inproceedings{lipping2022clotho,
  title={Clotho-AQA: A Crowdsourced Dataset for Audio Question Answering},
  author={Lipping, Samuel and Sudarsanam, Parthasaarathy and Drossos, Konstantinos and Virtanen, Tuomas},
  booktitle={EUSIPCO},
  year={2022}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): the model's answer to each question.
    references (`list` of `str`, or `list` of `list` of `str`): the reference answer(s) of each question.
    question_types (`list` of `str`, optional): a type for each question, in the same order (with `add_batch`,
        for all questions added); accuracy is then reported per type too.
Returns:
    `dict` with "accuracy", "yes_no_accuracy", "other_accuracy" (None when there is no such question),
    "num_questions", "num_yes_no", "num_other", and, with question types, "per_type":
    {type: {"accuracy": float, "count": int}}.
Examples:
    >>> qa = evaluate.load("pengi/evaluation/metrics/audio_qa")
    >>> qa.compute(predictions=["Yes.", "a dog"], references=["yes", "cat"])["accuracy"]
    0.5
"""

YES_NO = frozenset({"yes", "no"})
_SPACES = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """Lower case, delete punctuation (Unicode category P*), collapse whitespace and strip."""
    text = "".join(ch for ch in text.lower() if not unicodedata.category(ch).startswith("P"))
    return _SPACES.sub(" ", text).strip()


def _accuracy(hits: list[bool]) -> float | None:
    return sum(hits) / len(hits) if hits else None


def qa_accuracy(predictions: list[str], references: list[list[str]], question_types: list[str] | None = None) -> dict:
    """Exact-match accuracy after `normalize_answer`, overall, for yes/no and other questions, and per type."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if question_types is not None and len(question_types) != len(predictions):
        raise ValueError(f"{len(question_types)} question types for {len(predictions)} questions")
    hits, yes_no, other = [], [], []
    by_type: dict[str, list[bool]] = defaultdict(list)
    for i, (prediction, refs) in enumerate(zip(predictions, references)):
        if not refs:
            raise ValueError(f"question {i} has no reference answer")
        norm_refs = {normalize_answer(r) for r in refs}
        hit = normalize_answer(prediction) in norm_refs
        hits.append(hit)
        (yes_no if norm_refs <= YES_NO else other).append(hit)
        if question_types is not None:
            by_type[question_types[i]].append(hit)
    results = {
        "accuracy": _accuracy(hits),
        "yes_no_accuracy": _accuracy(yes_no),
        "other_accuracy": _accuracy(other),
        "num_questions": len(hits),
        "num_yes_no": len(yes_no),
        "num_other": len(other),
    }
    if question_types is not None:
        results["per_type"] = {t: {"accuracy": _accuracy(h), "count": len(h)} for t, h in sorted(by_type.items())}
    return results


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AudioQA(evaluate.Metric):
    """Exact-match audio QA accuracy with ClothoAQA-style normalisation, split by yes/no and question type."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch; a lone reference string is made a one-item list first.

        evaluate picks one input format from the first example and would store a later list as its str().
        """
        if references is not None:
            references = [[r] if isinstance(r, str) else r for r in references]
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one example; a lone reference string is made a one-item list first."""
        return super().add(prediction=prediction, reference=[reference] if isinstance(reference, str) else reference,
                           **kwargs)

    def _compute(self, predictions, references, question_types=None) -> dict:
        references = [list(r) for r in references]
        return qa_accuracy(list(predictions), references, None if question_types is None else list(question_types))
