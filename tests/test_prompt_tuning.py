"""Audio-free prompt tuning: starts from vanilla zero-shot, learns from text alone, applies to any labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pengi.models.clap.prompt_tuning import PromptTuner
from tests.conftest import make_clap, tone

LABELS = ["dog", "cat", "rain"]


@pytest.fixture
def clap(gpt2_tokenizer):
    return make_clap(gpt2_tokenizer, text_pooling="mean")


def clips() -> list[tuple[np.ndarray, int]]:
    return [(tone(f, 1.0, 16000), 16000) for f in (220, 880, 3000)]


def test_global_prompts_start_as_the_zero_shot_template(clap):
    tuner = PromptTuner(clap, local=False)
    assert torch.allclose(tuner.classify(clips(), LABELS), clap.zero_shot(clips(), LABELS), atol=1e-5)


def test_tuning_on_text_alone_fits_the_texts_and_leaves_clap_frozen(clap):
    before = {k: v.clone() for k, v in clap.state_dict().items()}
    tuner = PromptTuner(clap)
    texts = ["a dog barks", "the dog growls", "a cat meows", "the cat purrs", "rain falls", "heavy rain on a roof"]
    targets = [0, 0, 1, 1, 2, 2]
    pooled, tokens, mask = tuner.text_inputs(texts)
    start = tuner.logits(pooled, tokens, mask, LABELS)
    history = tuner.fit(texts, targets, LABELS, epochs=40, lr=5e-3, quiet=True)
    assert history[-1] < 0.5 * history[0]
    g, loc = tuner.logits(pooled, tokens, mask, LABELS)
    assert ((g + loc).argmax(-1) == torch.tensor(targets)).all()
    assert not torch.allclose(start[0], g)
    assert all(torch.equal(v, clap.state_dict()[k]) for k, v in before.items())
    # The prompts are shared by all labels, so they classify audio among labels never tuned on.
    probs = tuner.classify(clips(), ["bird", "engine"])
    assert probs.shape == (3, 2) and torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-5)


def test_saved_prompts_load_and_give_the_same_probabilities(clap, tmp_path):
    tuner = PromptTuner(clap)
    tuner.fit(["a dog barks", "a cat meows"], [0, 1], LABELS[:2], epochs=3, quiet=True)
    tuner.save(tmp_path / "prompts")
    again = PromptTuner.load(tmp_path / "prompts", clap)
    assert torch.allclose(again.classify(clips(), LABELS), tuner.classify(clips(), LABELS), atol=1e-6)


def test_local_prompts_need_frame_features(gpt2_tokenizer):
    segmented = make_clap(gpt2_tokenizer, text_pooling="mean", audio_time_segments=2)
    with pytest.raises(ValueError, match="frame features"):
        PromptTuner(segmented)
    assert PromptTuner(segmented, local=False).classify(clips(), LABELS).shape == (3, 3)


def test_mismatched_training_data_is_refused(clap):
    with pytest.raises(ValueError, match="one target per text"):
        PromptTuner(clap).fit(["a dog"], [0, 1], LABELS)
