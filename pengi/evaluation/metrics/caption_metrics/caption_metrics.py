"""Audio captioning metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE and SPIDEr, as the COCO caption toolkit
computes them.

Audio captioning papers and the DCASE challenge report these numbers from the COCO caption evaluation code, so
this module runs that code itself (`pycocoevalcap`): captions go through its PTB tokeniser (Stanford CoreNLP 3.4.1,
lower case, punctuation removed), then through its BLEU, METEOR 1.5, ROUGE-L, CIDEr (which is CIDEr-D: clipped
n-gram counts and a length penalty, scaled by 10) and SPICE scorers. Reimplementing them in Python would give
numbers that are close but not comparable with published ones. SPIDEr is (CIDEr-D + SPICE) / 2.

The tokeniser, METEOR and SPICE run in Java, so Java must be on PATH. METEOR's Java process takes seconds to
start, so one is kept per Python process and reused by every `compute`.

SPICE also needs Stanford CoreNLP 3.6.0, which `pycocoevalcap` does not ship and which its `Spice()` constructor
would try to download from nlp.stanford.edu. This module never triggers that download: when the two CoreNLP jars
are not in place (or SPICE's Java process fails), SPICE and SPIDEr are reported as ``None`` and
``results["unavailable"]`` says why and how to add the models; every other metric is still computed.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import sys
import tempfile
import threading
import warnings

import datasets
import evaluate
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.spice.spice import Spice
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

_CITATION = """\
@inproceedings{chen2015microsoft,
  title={Microsoft COCO Captions: Data Collection and Evaluation Server},
  author={Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and Vedantam, Ramakrishna and Gupta, Saurabh and
          Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  journal={arXiv preprint arXiv:1504.00325},
  year={2015}
}
@inproceedings{liu2017improved,
  title={Improved Image Captioning via Policy Gradient optimization of SPIDEr},
  author={Liu, Siqi and Zhu, Zhenhai and Ye, Ning and Guadarrama, Sergio and Murphy, Kevin},
  booktitle={ICCV},
  year={2017}
}
"""

_DESCRIPTION = __doc__

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one generated caption per clip.
    references (`list` of `list` of `str`): the reference captions of each clip (any number, at least one);
        a single `str` per clip is accepted too.
    spice (`bool`, default True): compute SPICE and SPIDEr. SPICE parses every caption with CoreNLP and takes
        minutes on a full test set; with False both are reported as unavailable.
Returns:
    `dict` with "BLEU_1" .. "BLEU_4", "METEOR", "ROUGE_L", "CIDEr-D" (COCO scale: 0 to 10), "SPICE", "SPIDEr"
    (floats, or None when unavailable), "num_clips", and "unavailable": {metric name: reason} (empty when all ran).
Examples:
    >>> metric = evaluate.load("pengi/evaluation/metrics/caption_metrics")
    >>> results = metric.compute(predictions=["a dog barks"], references=[["a dog is barking", "dog barks"]])
"""

# pycocoevalcap is a namespace package (no __init__.py), so its folder is found through a module in it.
SPICE_DIR = os.path.dirname(os.path.abspath(sys.modules[Spice.__module__].__file__))
SPICE_LIB = os.path.join(SPICE_DIR, "lib")
# spice-1.0.jar's manifest puts these two on its class path (lib/...); pycocoevalcap's get_stanford_models()
# takes them from this zip.
CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
CORENLP_ZIP_URL = "https://nlp.stanford.edu/software/stanford-corenlp-full-2015-12-09.zip"

# SPICE caches parses with the FST serialiser, which reflects into JDK classes; Java 16+ refuses that unless the
# packages are opened (InaccessibleObjectException). Java 9+ launchers read JDK_JAVA_OPTIONS, Java 8 ignores it.
SPICE_JAVA_OPTIONS = " ".join(
    f"--add-opens={p}=ALL-UNNAMED"
    for p in ("java.base/java.lang", "java.base/java.util", "java.base/java.util.concurrent", "java.base/java.math",
              "java.base/java.net", "java.base/java.text", "java.base/java.io", "java.sql/java.sql")
)

NAMES = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr-D", "SPICE", "SPIDEr")

_meteor: Meteor | None = None
_meteor_lock = threading.Lock()


def spice_missing_reason() -> str | None:
    """Why SPICE cannot run here (with the fix), or None when everything it needs is in place."""
    if shutil.which("java") is None:
        return "SPICE needs Java on PATH."
    missing = [j for j in CORENLP_JARS if not os.path.isfile(os.path.join(SPICE_LIB, j))]
    if not missing:
        return None
    return (
        f"SPICE needs Stanford CoreNLP 3.6.0, which pycocoevalcap does not ship: missing {', '.join(missing)} in "
        f"{SPICE_LIB}/. To add it, take stanford-corenlp-full-2015-12-09/{CORENLP_JARS[0]} and "
        f"stanford-corenlp-full-2015-12-09/{CORENLP_JARS[1]} from {CORENLP_ZIP_URL} and copy both jars, "
        f"with exactly these names, into {SPICE_LIB}/ (spice-1.0.jar loads them from there). With internet "
        "access, `python -c \"from pycocoevalcap.spice.get_stanford_models import get_stanford_models; "
        "get_stanford_models()\"` does the same. SPICE also needs about 8 GB of Java heap (it runs with -Xmx8G)."
    )


def _check_java() -> None:
    if shutil.which("java") is None:
        raise RuntimeError(
            "The COCO caption metrics need Java on PATH: the PTB tokeniser, METEOR and SPICE are Java programs "
            "(any Java 8 or later; on Debian/Ubuntu: apt-get install default-jre-headless)."
        )


def _tokenize(captions: dict[int, list[str]]) -> dict[int, list[str]]:
    """pycocoevalcap's PTB tokenisation, fed the {id: [{"caption": ...}]} layout that COCOEvalCap gives it.

    The tokeniser reads one caption per line, and pycocoevalcap only replaces "\\n" inside captions, so a "\\r"
    or another line break would shift every later caption onto the wrong clip without an error. Whitespace runs
    are made single spaces first, which changes no token.
    """
    clean = {k: [{"caption": " ".join(c.split())} for c in v] for k, v in captions.items()}
    with _java_stderr_kept_unless_failed():
        tokens = PTBTokenizer().tokenize(clean)
    if any(len(tokens.get(k, ())) != len(v) for k, v in captions.items()):
        raise RuntimeError("the PTB tokeniser returned a different number of captions than it was given")
    return tokens


def _meteor_score(gts: dict, res: dict) -> float:
    """METEOR with one Java process per Python process; a process that failed is replaced, never reused."""
    global _meteor
    with _meteor_lock:
        if _meteor is None or _meteor.meteor_p.poll() is not None:
            _meteor = Meteor()
        scorer = _meteor
        try:
            return float(scorer.compute_score(gts, res)[0])
        except Exception:
            _meteor = None
            if scorer.lock.locked():  # Meteor.__del__ takes this lock: leave it free or the interpreter hangs
                scorer.lock.release()
            close_meteor(scorer)
            raise


def close_meteor(scorer: Meteor | None = None) -> None:
    """Stop a METEOR Java process (by default the shared one) and close its pipes."""
    global _meteor
    if scorer is None:
        scorer, _meteor = _meteor, None
    if scorer is None or scorer.meteor_p.poll() is not None:
        return
    with scorer.lock:
        for pipe in (scorer.meteor_p.stdin, scorer.meteor_p.stdout, scorer.meteor_p.stderr):
            pipe.close()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()


atexit.register(close_meteor)


@contextlib.contextmanager
def _java_stderr_kept_unless_failed():
    """The PTB tokeniser's Java process reports every call on its inherited stderr ("PTBTokenizer tokenized 1234
    tokens at ..."): hold the process's stderr in a file while it runs, and show it only if the call fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def _java_options(options: str):
    old = os.environ.get("JDK_JAVA_OPTIONS")
    os.environ["JDK_JAVA_OPTIONS"] = f"{old} {options}" if old else options
    try:
        yield
    finally:
        if old is None:
            del os.environ["JDK_JAVA_OPTIONS"]
        else:
            os.environ["JDK_JAVA_OPTIONS"] = old


def _spice_score(gts: dict, res: dict) -> tuple[float | None, str | None]:
    """(SPICE, None), or (None, reason) when SPICE cannot run; never raises."""
    reason = spice_missing_reason()
    if reason is not None:
        return None, reason
    try:
        with _java_options(SPICE_JAVA_OPTIONS):
            return float(Spice().compute_score(gts, res)[0]), None
    except Exception as e:  # whatever SPICE does, the other metrics must still be returned
        return None, (
            f"SPICE's Java process failed ({type(e).__name__}: {e}); its Java error is printed above. SPICE was "
            "built for Java 8: if the error persists, put a Java 8 or 11 first on PATH, and check that the "
            f"machine can give Java 8 GB of heap (-Xmx8G). CoreNLP jars found in {SPICE_LIB}/."
        )


def coco_caption_scores(predictions: list[str], references: list[list[str]], spice: bool = True) -> dict:
    """The COCO caption metrics of ``predictions`` against ``references`` (see the module docstring)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        raise ValueError("no captions to score")
    for i, refs in enumerate(references):
        if not refs:
            raise ValueError(f"clip {i} has no reference caption")
    _check_java()
    gts = _tokenize({i: list(refs) for i, refs in enumerate(references)})
    res = _tokenize({i: [p] for i, p in enumerate(predictions)})

    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    results: dict = {f"BLEU_{n + 1}": float(b) for n, b in enumerate(bleu)}
    results["METEOR"] = _meteor_score(gts, res)
    results["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    results["CIDEr-D"] = float(Cider().compute_score(gts, res)[0])

    unavailable: dict[str, str] = {}
    spice_value, reason = _spice_score(gts, res) if spice else (None, "SPICE was turned off (spice=False).")
    results["SPICE"] = spice_value
    results["SPIDEr"] = None if spice_value is None else (results["CIDEr-D"] + spice_value) / 2
    if reason is not None:
        unavailable["SPICE"] = reason
        unavailable["SPIDEr"] = "SPIDEr is (CIDEr-D + SPICE) / 2, and SPICE is unavailable (see 'SPICE')."
        if spice:
            warnings.warn(f"SPICE and SPIDEr unavailable: {reason}", stacklevel=2)
    results["num_clips"] = len(predictions)
    results["unavailable"] = unavailable
    return results


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CaptionMetrics(evaluate.Metric):
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE and SPIDEr with the COCO caption toolkit."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
            reference_urls=["https://github.com/salaniz/pycocoevalcap", "https://github.com/tylin/coco-caption"],
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

    def _compute(self, predictions, references, spice: bool = True) -> dict:
        references = [list(r) for r in references]
        return coco_caption_scores(list(predictions), references, spice=spice)
