"""The evaluation metrics in pengi/evaluation/metrics, loaded by path with `evaluate.load` as users load them.

Caption scores are checked against pycocoevalcap's own scorers run the way COCOEvalCap runs them; the other
metrics against values worked out by hand in the comments.
"""

from __future__ import annotations

import shutil
import sys
import warnings

import evaluate
import numpy as np
import pytest

from pengi.evaluation.metrics import NAMES, load, metric_path


def module_of(metric: evaluate.EvaluationModule):
    """The metric script's module (evaluate imports it from its cache), for its helper functions."""
    return sys.modules[type(metric).__module__]


@pytest.fixture(scope="session")
def captions():
    """Loaded once so that METEOR's Java process starts once per test session."""
    assert shutil.which("java"), "the COCO caption toolkit (PTB tokenizer, METEOR) needs Java on PATH"
    return load("caption_metrics")


@pytest.fixture(scope="session")
def retrieval():
    return load("retrieval")


def test_every_metric_loads_by_path_without_the_hub():
    for name in NAMES:
        metric = evaluate.load(metric_path(name))
        assert isinstance(metric, evaluate.Metric)
    with pytest.raises(ValueError, match="unknown metric"):
        metric_path("bleu")


# ---------------------------------------------------------------------------------------------- captioning

COCO_KEYS = {"BLEU_1": ("Bleu", 0), "BLEU_2": ("Bleu", 1), "BLEU_3": ("Bleu", 2), "BLEU_4": ("Bleu", 3),
             "METEOR": ("METEOR", None), "ROUGE_L": ("ROUGE_L", None), "CIDEr-D": ("CIDEr", None)}


def caption_pairs(n: int = 36, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """Audio-caption-like predictions and 1-5 references per clip, with case, punctuation and repeats."""
    rng = np.random.default_rng(seed)
    subjects = ["a dog", "the dogs", "a man", "birds", "a car", "rain", "water", "people", "a woman", "an engine"]
    verbs = ["barks", "is talking", "chirp", "passes by", "falls", "flows", "are cheering", "laughs", "runs"]
    tails = ["", " loudly", " in the distance", " while cars pass", ", then stops.", " on a metal roof!",
             " and birds sing", " nearby.", " (twice)", " -- very quietly"]

    def sentence() -> str:
        s = f"{rng.choice(subjects)} {rng.choice(verbs)}{rng.choice(tails)}"
        return s.capitalize() if rng.random() < 0.5 else s

    predictions = [sentence() for _ in range(n)]
    references = [[sentence() for _ in range(rng.integers(1, 6))] for _ in range(n)]
    predictions[0], references[0] = "A dog barks.", ["a dog barks", "A dog is barking!"]  # a near-perfect clip
    predictions[1] = ""  # an empty prediction must score, not crash
    return predictions, references


def test_caption_metrics_hand_checked(captions):
    # One clip: prediction "a dog barks loudly", references "a dog barks" and "the dog barks loudly".
    # BLEU (COCO: clipped n-gram precision, closest reference length 4 = hypothesis length, so no brevity penalty):
    #   1-grams 4/4, 2-grams (a dog, dog barks, barks loudly) 3/3, 3-grams (a dog barks, dog barks loudly) 2/2,
    #   4-gram "a dog barks loudly" 0/1 -> BLEU-1..3 = 1, BLEU-4 = (1e-15 / 1)^(1/4) = 1.78e-4 (COCO adds 1e-15 to
    #   the matches so that a zero count still gives a number).
    # ROUGE-L (COCO takes the best precision and the best recall over references, beta = 1.2):
    #   LCS with ref 1 = 3 -> P 3/4, R 3/3; with ref 2 = 3 -> P 3/4, R 3/4; P = 0.75, R = 1
    #   -> (1 + 1.44) * 0.75 * 1 / (1 + 1.44 * 0.75) = 1.83 / 2.08 = 0.879807...
    # CIDEr-D: idf is log(number of clips / document frequency) = log(1 / 1) = 0 with one clip, so 0.
    # PTB tokenisation lower-cases and drops punctuation, so "A dog barks, loudly!" scores the same.
    refs = [["a dog barks", "the dog barks loudly"]]
    r = captions.compute(predictions=["a dog barks loudly"], references=refs, spice=False)
    for n in (1, 2, 3):
        assert r[f"BLEU_{n}"] == pytest.approx(1.0, abs=1e-6)
    assert r["BLEU_4"] == pytest.approx(1e-15 ** 0.25, rel=1e-6)
    assert r["ROUGE_L"] == pytest.approx(1.83 / 2.08, abs=1e-12)
    assert r["CIDEr-D"] == 0.0
    assert 0.0 < r["METEOR"] < 1.0
    assert r["num_clips"] == 1
    noisy = captions.compute(predictions=["A dog barks, loudly!"], references=refs, spice=False)
    assert {k: noisy[k] for k in COCO_KEYS} == {k: r[k] for k in COCO_KEYS}


def test_caption_metrics_equal_pycocoevalcap(captions):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    predictions, references = caption_pairs()
    ours = captions.compute(predictions=predictions, references=references, spice=False)

    # What COCOEvalCap.evaluate() does: tokenise references and results separately, then run each scorer.
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in refs] for i, refs in enumerate(references)})
    res = tokenizer.tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)})
    meteor = Meteor()
    coco = {"Bleu": Bleu(4).compute_score(gts, res, verbose=0)[0], "METEOR": meteor.compute_score(gts, res)[0],
            "ROUGE_L": Rouge().compute_score(gts, res)[0], "CIDEr": Cider().compute_score(gts, res)[0]}
    module_of(captions).close_meteor(meteor)
    for ours_key, (coco_key, index) in COCO_KEYS.items():
        expected = coco[coco_key] if index is None else coco[coco_key][index]
        assert ours[ours_key] == pytest.approx(float(expected), rel=1e-12, abs=1e-15), ours_key
    assert 0 < ours["CIDEr-D"] and 0 < ours["BLEU_4"] < ours["BLEU_1"] <= 1


def test_line_breaks_inside_captions_do_not_shift_clips(captions):
    # The PTB tokeniser reads one caption per line; a "\r" used to move later captions onto the wrong clip.
    refs = [["a dog barks"], ["rain falls on a roof"], ["birds sing"]]
    clean = captions.compute(predictions=["a dog barks", "rain falls", "birds sing"], references=refs, spice=False)
    broken = captions.compute(predictions=["a dog\rbarks", "rain\u2028falls", "birds sing"], references=refs,
                              spice=False)
    assert {k: broken[k] for k in COCO_KEYS} == {k: clean[k] for k in COCO_KEYS}


def test_spice_unavailable_is_reported_with_the_fix_and_other_metrics_still_run(captions):
    mod = module_of(captions)
    if mod.spice_missing_reason() is None:
        pytest.skip("Stanford CoreNLP is installed for SPICE on this machine")
    predictions, references = caption_pairs(6)
    with pytest.warns(UserWarning, match="SPICE and SPIDEr unavailable"):
        r = captions.compute(predictions=predictions, references=references)
    assert r["SPICE"] is None and r["SPIDEr"] is None
    reason = r["unavailable"]["SPICE"]
    for needed in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar", mod.SPICE_LIB,
                   "stanford-corenlp-full-2015-12-09.zip", "get_stanford_models"):
        assert needed in reason
    assert "SPICE is unavailable" in r["unavailable"]["SPIDEr"]
    for key in COCO_KEYS:
        assert isinstance(r[key], float)
    # Nothing was downloaded behind the user's back (pycocoevalcap's Spice() would have tried).
    assert mod.spice_missing_reason() is not None


def test_spice_off_on_request(captions):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = captions.compute(predictions=["a dog barks"], references=[["a dog barks"]], spice=False)
    assert r["SPICE"] is None and "spice=False" in r["unavailable"]["SPICE"]


def test_caption_input_errors(captions, monkeypatch):
    with pytest.raises(ValueError, match="no reference"):
        captions.compute(predictions=["a dog", "a cat"], references=[["a dog"], []], spice=False)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RuntimeError, match="need Java on PATH"):
        captions.compute(predictions=["a dog"], references=[["a dog"]])


# ---------------------------------------------------------------------------------------------- audio QA


@pytest.mark.parametrize(("raw", "normalised"), [
    ("Yes.", "yes"), ("  A   Dog! ", "a dog"), ("it's", "its"), ("\u201cTwo\u201d", "two"),
    ("No,\tthanks", "no thanks"), ("sci-fi", "scifi"), ("...", ""), ("THREE times?!", "three times"),
])
def test_qa_normalisation(raw, normalised):
    assert module_of(load("audio_qa")).normalize_answer(raw) == normalised


def test_qa_accuracy_split_by_yes_no_and_type():
    qa = load("audio_qa")
    predictions = ["Yes.", "no", "A dog!", "cat", "Two", "yes it is"]
    references = ["yes", "yes", "a dog", "dog", ["2", "two"], "Yes"]
    types = ["is", "is", "what", "what", "how many", "is"]
    # hits: yes/yes ok, no/yes wrong, dog ok, cat/dog wrong, two ok (any reference), "yes it is" != "yes" wrong
    # -> 3/6 overall; yes/no questions (refs all yes/no): 1, 2, 6 -> 1/3; others 3, 4, 5 -> 2/3
    r = qa.compute(predictions=predictions, references=references, question_types=types)
    assert r["accuracy"] == pytest.approx(3 / 6)
    assert r["yes_no_accuracy"] == pytest.approx(1 / 3) and r["num_yes_no"] == 3
    assert r["other_accuracy"] == pytest.approx(2 / 3) and r["num_other"] == 3
    assert r["per_type"] == {"how many": {"accuracy": 1.0, "count": 1}, "is": {"accuracy": pytest.approx(1 / 3),
                             "count": 3}, "what": {"accuracy": 0.5, "count": 2}}
    # One example at a time, a lone reference string and a list mixed.
    qa.add(prediction="Two", reference="three")
    qa.add(prediction="Two", reference=["2", "two"])
    assert qa.compute()["accuracy"] == 0.5
    plain = qa.compute(predictions=["rain"], references=["Rain."])
    assert plain["accuracy"] == 1.0 and plain["yes_no_accuracy"] is None and "per_type" not in plain
    with pytest.raises(ValueError, match="question types"):
        qa.compute(predictions=["yes"], references=["yes"], question_types=["is", "what"])


# ---------------------------------------------------------------------------------------------- classification


def test_single_label_accuracy_from_labels_and_scores():
    acc = load("classification")
    assert acc.compute(predictions=[1, 2, 3, 0], references=[1, 2, 0, 0])["accuracy"] == 0.75
    assert acc.compute(predictions=["dog", "cat"], references=["dog", "dog"])["accuracy"] == 0.5
    # Scores: arg-max 1, 0, and 0 for the tie (lowest index) -> right, wrong, right.
    r = acc.compute(predictions=[[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]], references=[1, 1, 0])
    assert r == {"accuracy": pytest.approx(2 / 3), "num_examples": 3}


def test_multilabel_map_by_hand_with_ties_and_a_skipped_class():
    # class 0: scores .9 .8 .7 .6, labels 1 0 1 0 -> AP = (1/1 + 2/3) / 2 = 0.8333
    # class 1: scores .5 .5 .5 .1, labels 1 0 0 1 -> the three tied clips are one threshold:
    #          P = 1/3 at R = 1/2, then P = 2/4 at R = 1 -> AP = 1/2 * 1/3 + 1/2 * 1/2 = 0.41667
    #          (ordering the ties by index would give 1/2 * 1 + 1/2 * 1/2 = 0.75)
    # class 2: no positive -> skipped and reported, mAP = (0.8333 + 0.41667) / 2 = 0.625
    mlap = load("classification", "multilabel")
    scores = [[0.9, 0.5, 0.2], [0.8, 0.5, 0.1], [0.7, 0.5, 0.3], [0.6, 0.1, 0.0]]
    labels = [[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]]
    with pytest.warns(UserWarning, match=r"skips 1 of 3 classes with no positive reference: \['siren'\]"):
        r = mlap.compute(predictions=scores, references=labels, label_names=["dog", "rain", "siren"])
    assert r["average_precision"] == [pytest.approx(5 / 6), pytest.approx(5 / 12), None]
    assert r["mAP"] == pytest.approx(0.625)
    assert (r["num_classes"], r["num_evaluated_classes"], r["skipped_classes"]) == (3, 2, ["siren"])


def test_multilabel_map_from_predicted_labels():
    # 0/1 predictions: class 0 predicted for clips 0 and 2, true for clip 0 -> one threshold, P = 1/2, R = 1 -> 0.5;
    # class 1 predicted exactly -> 1.0; mAP = 0.75
    r = load("classification", "multilabel").compute(predictions=[[1, 0], [0, 1], [1, 0]],
                                                     references=[[1, 0], [0, 1], [0, 0]])
    assert r["average_precision"] == [0.5, 1.0] and r["mAP"] == 0.75 and r["skipped_classes"] == []
    with pytest.raises(ValueError, match="0/1"):
        load("classification", "multilabel").compute(predictions=[[0.3, 0.2]], references=[[2, 0]])


# ---------------------------------------------------------------------------------------------- retrieval

# 3 clips x 6 captions, two captions per clip: t0, t1 -> clip 0; t2, t3 -> clip 1; t4, t5 -> clip 2.
SIM = np.array([
    #  t0   t1   t2   t3   t4   t5
    [0.9, 0.2, 0.1, 0.5, 0.3, 0.3],  # clip 0
    [0.1, 0.2, 0.8, 0.5, 0.3, 0.6],  # clip 1
    [0.0, 0.7, 0.3, 0.1, 0.3, 0.4],  # clip 2
])
OWNER = [0, 0, 1, 1, 2, 2]


def test_retrieval_by_hand_with_ties(retrieval):
    # Text to audio, rank of each caption's clip in its column, ties against the model:
    #   t0 1; t1 3 (0.2 ties clip 1, below 0.7); t2 1; t3 2 (ties clip 0); t4 3 (all 0.3); t5 2
    #   R@1 = 2/6, R@2 = 4/6, R@5 = R@10 = 1; mAP@10 = mean(1, 1/3, 1, 1/2, 1/3, 1/2) = 0.6111
    # Audio to text, ranks of each clip's two captions in its row:
    #   clip 0: t0 1, t1 5 -> first 1, AP = (1/1 + 2/5) / 2 = 0.7
    #   clip 1: t2 1, t3 3 -> first 1, AP = (1/1 + 2/3) / 2 = 0.8333
    #   clip 2: t1 0.7, t5 0.4, then t2 and t4 tie at 0.3 with irrelevant t2 first: t5 2, t4 4
    #           -> first 2, AP = (1/2 + 2/4) / 2 = 0.5
    #   R@1 = 2/3, R@2 = 1; mAP@10 = (0.7 + 0.8333 + 0.5) / 3 = 0.6778
    # The metric takes one row per caption: the transpose.
    r = retrieval.compute(predictions=SIM.T, references=OWNER)
    assert r["t2a_R@1"] == pytest.approx(2 / 6) and r["t2a_R@5"] == 1.0 and r["t2a_R@10"] == 1.0
    assert r["t2a_mAP@10"] == pytest.approx(11 / 18)
    assert r["a2t_R@1"] == pytest.approx(2 / 3) and r["a2t_R@5"] == 1.0 and r["a2t_R@10"] == 1.0
    assert r["a2t_mAP@10"] == pytest.approx((0.7 + 5 / 6 + 0.5) / 3)
    assert (r["num_captions"], r["num_audio"], r["num_audio_queries"]) == (6, 3, 3)

    # Cut-offs at 2: t2a AP = (1, 0, 1, 1/2, 0, 1/2) -> 0.5; a2t clip 0 (1, -) 0.5, clip 1 (1, -) 0.5,
    # clip 2 (2, -) 1/2 * 1/2 = 0.25 -> 0.41667
    r2 = retrieval.compute(predictions=SIM.T, references=OWNER, ks=(1, 2), map_at=2)
    assert r2["t2a_R@2"] == pytest.approx(4 / 6) and r2["a2t_R@2"] == 1.0
    assert r2["t2a_mAP@2"] == pytest.approx(0.5) and r2["a2t_mAP@2"] == pytest.approx(1.25 / 3)


def test_retrieval_constant_similarity_gets_the_worst_ranks(retrieval):
    # Ordering ties by index would make this "model" perfect; against the model, each clip comes last.
    r = retrieval.compute(predictions=np.zeros((4, 4)), references=[0, 1, 2, 3], ks=(1, 3))
    assert r["t2a_R@1"] == 0.0 and r["t2a_R@3"] == 0.0 and r["t2a_mAP@10"] == pytest.approx(1 / 4)
    assert r["a2t_R@1"] == 0.0 and r["a2t_mAP@10"] == pytest.approx(1 / 4)


def naive_ranks(scores: np.ndarray, relevant: list[int]) -> list[int]:
    """Ranks from a plain sort, as Mei et al.'s evaluation code does; valid when no scores tie."""
    order = list(np.argsort(-scores))
    return sorted(order.index(i) + 1 for i in relevant)


def test_retrieval_matches_a_plain_sort_with_five_captions_per_clip(retrieval):
    rng = np.random.default_rng(0)
    n_audio, per_clip = 12, 5
    owner = np.repeat(np.arange(n_audio), per_clip)
    audio, text = rng.normal(size=(n_audio, 8)), rng.normal(size=(n_audio * per_clip, 8))
    text[::2] += audio[owner[::2]] * 2  # half the captions close to their clip: recall between 0 and 1
    sim = audio @ text.T
    t2a = np.array([naive_ranks(sim[:, t], [owner[t]])[0] for t in range(owner.size)])
    a2t = [naive_ranks(sim[a], list(np.flatnonzero(owner == a))) for a in range(n_audio)]
    ap = [sum((i + 1) / r for i, r in enumerate(ranks) if r <= 10) / len(ranks) for ranks in a2t]
    r = retrieval.compute(predictions=sim.T, references=owner)
    for k in (1, 5, 10):
        assert r[f"t2a_R@{k}"] == pytest.approx(np.mean(t2a <= k))
        assert r[f"a2t_R@{k}"] == pytest.approx(np.mean([ranks[0] <= k for ranks in a2t]))
    assert r["t2a_mAP@10"] == pytest.approx(np.mean(np.where(t2a <= 10, 1 / t2a, 0)))
    assert r["a2t_mAP@10"] == pytest.approx(np.mean(ap))
    assert 0 < r["t2a_R@1"] < 1 and 0 < r["a2t_mAP@10"] < 1

    # Captions added in batches give the same result as all at once.
    for start in range(0, owner.size, 7):
        retrieval.add_batch(predictions=sim.T[start:start + 7], references=owner[start:start + 7])
    assert retrieval.compute() == r


def test_retrieval_clip_without_captions_is_a_candidate_but_not_a_query(retrieval):
    # Clip 1 has no caption: t2a still ranks it (it beats t0's clip), a2t asks only clips 0 and 2.
    sim = np.array([[0.5, 0.1], [0.9, 0.2], [0.0, 0.8]])
    r = retrieval.compute(predictions=sim.T, references=[0, 2])
    assert r["num_audio_queries"] == 2 and r["num_audio"] == 3
    assert r["t2a_R@1"] == 0.5 and r["t2a_mAP@10"] == pytest.approx((1 / 2 + 1) / 2)
    assert r["a2t_R@1"] == 1.0
    with pytest.raises(ValueError, match="indices must be integers"):
        retrieval.compute(predictions=sim.T, references=[0, 3])
