"""Audio-text retrieval metrics for CLAP-style models: R@1, R@5, R@10 and mAP@10 in both directions.

The conventions are those of audio retrieval on Clotho and AudioCaps (DCASE task 6b, Oncescu et al. 2021,
Mei et al. 2022), where each clip has several captions (five in Clotho, five in the AudioCaps test set):

* text-to-audio (t2a): every caption is a query and its one clip is the only relevant item among all clips.
  R@K is the fraction of captions whose clip is ranked in the top K; AP@10 is 1/rank when rank <= 10, else 0
  (DCASE's mAP@10), and mAP@10 its mean over captions.
* audio-to-text (a2t): every clip with at least one caption is a query, and all its captions are relevant.
  R@K is the fraction of clips with at least one of their captions in the top K. AP@10 runs over all relevant
  captions: with the clip's m captions at ranks r_1 < ... < r_m, AP@10 = (1/m) * sum over r_i <= 10 of i / r_i,
  so a clip whose five captions fill ranks 1-5 scores 1, and one with a single caption in the top 10, at rank 1,
  scores 1/5. mAP@10 is its mean over clips.

Ties are broken against the model: a relevant item with the same score as irrelevant ones is ranked after all of
them (ties among relevant items do not matter). Sorting would otherwise order ties by index, which can give a
model that outputs a constant similarity perfect recall; here it gets the worst ranks.

Results are fractions in [0, 1] (papers usually print them x 100). Clips with no caption are still candidates
for text-to-audio retrieval but are not audio-to-text queries.

Input, one row per caption (so captions can be added in batches): ``predictions[t]`` is the similarity of caption
t to every clip, that is row t of a (captions x clips) matrix, the transpose of ``audio_embeds @ text_embeds.T``;
``references[t]`` is the index of caption t's clip. `retrieval_metrics` takes the (clips x captions) matrix
directly.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = __doc__

_CITATION = """\
@inproceedings{oncescu2021audio,
  title={Audio Retrieval with Natural Language Queries},
  author={Oncescu, Andreea-Maria and Koepke, A. Sophia and Henriques, Jo{\\~a}o F. and Akata, Zeynep and
          Albanie, Samuel},
  booktitle={Interspeech},
  year={2021}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): one row per caption: its similarity to each audio clip.
    references (`list` of `int`): the index of the audio clip each caption describes.
    ks (`tuple` of `int`, default (1, 5, 10)): the K of the recalls R@K.
    map_at (`int`, default 10): the cut-off of mAP.
Returns:
    `dict` with "t2a_R@1", "t2a_R@5", "t2a_R@10", "t2a_mAP@10", "a2t_R@1", "a2t_R@5", "a2t_R@10", "a2t_mAP@10"
    (fractions), "num_captions", "num_audio" (all candidate clips) and "num_audio_queries" (clips with a caption).
Examples:
    >>> retrieval = evaluate.load("pengi/evaluation/metrics/retrieval")
    >>> sim = audio_embeds @ text_embeds.T                     # (clips x captions)
    >>> retrieval.compute(predictions=sim.T, references=caption_to_clip)
"""


def relevant_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """The 1-based ranks of the relevant candidates, best first, with ties broken against the model."""
    order = np.lexsort((relevant, -scores))  # by score, high first; among equal scores irrelevant ones first
    ranks = np.empty(scores.size, dtype=np.int64)
    ranks[order] = np.arange(1, scores.size + 1)
    return np.sort(ranks[relevant])


def average_precision_at(ranks: np.ndarray, k: int) -> float:
    """(1 / number relevant) * sum, over relevant items ranked <= k, of the precision at their rank."""
    hits = np.arange(1, ranks.size + 1) / ranks
    return float(hits[ranks <= k].sum() / ranks.size)


def retrieval_metrics(similarity, text_to_audio, ks: tuple[int, ...] = (1, 5, 10), map_at: int = 10) -> dict:
    """R@K and mAP@``map_at`` both ways from a (clips x captions) ``similarity`` and each caption's clip index."""
    sim = np.asarray(similarity, dtype=np.float64)
    owner = np.asarray(text_to_audio)
    if sim.ndim != 2 or sim.size == 0:
        raise ValueError(f"similarity must be a non-empty (clips x captions) matrix, got shape {sim.shape}")
    n_audio, n_text = sim.shape
    if owner.shape != (n_text,):
        raise ValueError(f"{owner.size} caption-to-clip indices for {n_text} captions")
    if not np.issubdtype(owner.dtype, np.integer) or owner.min() < 0 or owner.max() >= n_audio:
        raise ValueError(f"caption-to-clip indices must be integers in [0, {n_audio})")
    if not np.isfinite(sim).all():
        raise ValueError("similarity contains NaN or infinite values")

    # Text to audio: one relevant clip, so its rank is the number of clips scoring at least as high (itself
    # included), which is the rank with ties broken against the model.
    target = sim[owner, np.arange(n_text)]
    t2a_rank = (sim >= target[None, :]).sum(axis=0)
    results: dict = {f"t2a_R@{k}": float(np.mean(t2a_rank <= k)) for k in ks}
    results[f"t2a_mAP@{map_at}"] = float(np.mean(np.where(t2a_rank <= map_at, 1.0 / t2a_rank, 0.0)))

    first_rank, aps = [], []
    for a in np.unique(owner):
        ranks = relevant_ranks(sim[a], owner == a)
        first_rank.append(ranks[0])
        aps.append(average_precision_at(ranks, map_at))
    first = np.asarray(first_rank)
    results.update({f"a2t_R@{k}": float(np.mean(first <= k)) for k in ks})
    results[f"a2t_mAP@{map_at}"] = float(np.mean(aps))
    results.update(num_captions=n_text, num_audio=n_audio, num_audio_queries=len(first_rank))
    return results


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Retrieval(evaluate.Metric):
    """Text-to-audio and audio-to-text R@1/5/10 and mAP@10 from caption-by-clip similarities."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                        "references": datasets.Value("int64")}),
            reference_urls=["https://dcase.community/challenge2022/task-language-based-audio-retrieval"],
        )

    def _compute(self, predictions, references, ks=(1, 5, 10), map_at=10) -> dict:
        rows = [np.asarray(r, dtype=np.float64) for r in predictions]
        if len({r.size for r in rows}) > 1:
            raise ValueError("every caption needs a similarity to every clip (rows of different lengths)")
        return retrieval_metrics(np.stack(rows).T, np.asarray(references, dtype=np.int64), tuple(ks), map_at)
