"""Processors on transformers' ProcessorMixin: AutoProcessor round trips for every family, folders in the layout of
earlier versions, feature extractors built from the model config, and CLAP and SLAP under transformers'
zero-shot-audio-classification pipeline, scoring as `zero_shot` does."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from transformers import (
    AutoFeatureExtractor,
    AutoProcessor,
    AutoTokenizer,
    GPT2Config,
    PreTrainedModel,
    ProcessorMixin,
    pipeline,
)

from pengi import CLAP, SLAP, AudioClipFeatureExtractor, CLAPProcessor, Pengi, PengiProcessor, SLAPProcessor
from pengi.models.pengi.modeling_pengi import DEFAULT_MODEL_DIR
from pengi.presets import clap_tiny, slap_tiny, tiny

from .conftest import make_tiny, tone

SR = 16000
FAMILIES = ["pengi", "pengi_prompt", "clap", "slap"]
LABELS = ["dog", "rain", "siren"]


@pytest.fixture(scope="module")
def byte_bpe():
    return AutoTokenizer.from_pretrained(f"{DEFAULT_MODEL_DIR}/tokenizer")


@pytest.fixture(scope="module")
def build(gpt2_tokenizer, bert_tokenizer, byte_bpe):
    """A tiny random model of a family, its processor attached, in eval mode."""
    def make(family: str, **overrides):
        torch.manual_seed(0)
        if family == "pengi":
            return make_tiny(byte_bpe, **overrides)
        if family == "pengi_prompt":
            return make_tiny(byte_bpe, bert_tokenizer, **overrides)
        if family.startswith("clap"):
            tok = gpt2_tokenizer if family == "clap_gpt2" else bert_tokenizer
            if family == "clap_gpt2":  # msclap 2023's text side: GPT-2 pooled at the appended end-of-text token
                overrides = dict(text_config=GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2,
                                                        n_positions=64), text_pooling="last",
                                 text_suffix=" <|endoftext|>", **overrides)
            config = clap_tiny(len(tok), **overrides)
            model = CLAP(config).eval()
            model.processor = CLAPProcessor(config, tok)
            return model
        config = slap_tiny(len(byte_bpe), **overrides)
        model = SLAP(config).eval()
        model.processor = SLAPProcessor(config, byte_bpe)
        return model
    return make


def clips() -> list[tuple[np.ndarray, int]]:
    return [(tone(300, 0.4, SR), SR), (tone(900, 1.6, 44100, channels=2).T, 44100)]


def inputs(processor, family: str) -> dict[str, torch.Tensor]:
    """Everything the family's model takes, from the processor's own __call__."""
    if family.startswith("pengi"):
        return processor(audio=clips(), prompts=["generate audio caption", "this is a sound of"],
                         answers=["a tone", "a beep"])
    return processor(audio=clips(), texts=["a low tone", "a high tone"])


def assert_same_processor(loaded, original, family: str) -> None:
    assert type(loaded) is type(original) and isinstance(loaded, ProcessorMixin)
    assert loaded.feature_extractor.settings() == original.feature_extractor.settings()
    assert type(loaded.config) is type(original.config)  # the text settings are compared through the outputs
    a, b = inputs(loaded, family), inputs(original, family)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if family.startswith("pengi"):
        assert (loaded.prompt_tokenizer is None) == (original.prompt_tokenizer is None)


def save_old_layout(model, folder) -> None:
    """A folder as pengi wrote it before its processors were ProcessorMixins (and as the shipped model and earlier
    converters did): weights and config.json, the main tokenizer in tokenizer/, a prompt tokenizer in
    prompt_tokenizer/, and no processor_config.json."""
    PreTrainedModel.save_pretrained(model, folder)
    model.processor.tokenizer.save_pretrained(folder / "tokenizer")
    if getattr(model.processor, "prompt_tokenizer", None) is not None:
        model.processor.prompt_tokenizer.save_pretrained(folder / "prompt_tokenizer")


# ----------------------------------------------------------------------------- saving and loading
@pytest.mark.parametrize("family", FAMILIES)
def test_auto_processor_round_trip(build, family, tmp_path):
    model = build(family)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "processor_config.json").is_file() and (tmp_path / "tokenizer_config.json").is_file()
    assert (tmp_path / "prompt_tokenizer").is_dir() == (family == "pengi_prompt")
    assert_same_processor(AutoProcessor.from_pretrained(tmp_path), model.processor, family)
    assert_same_processor(type(model).from_pretrained(tmp_path).processor, model.processor, family)
    fe = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert type(fe) is AudioClipFeatureExtractor and fe.settings() == model.processor.feature_extractor.settings()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer("a dog")["input_ids"] == model.processor.tokenizer("a dog")["input_ids"]


@pytest.mark.parametrize("family", FAMILIES)
def test_folders_of_earlier_versions_load(build, family, tmp_path):
    model = build(family)
    save_old_layout(model, tmp_path)
    assert not (tmp_path / "processor_config.json").exists() and not (tmp_path / "tokenizer_config.json").exists()
    loaded = type(model).from_pretrained(tmp_path)
    assert_same_processor(loaded.processor, model.processor, family)
    assert_same_processor(AutoProcessor.from_pretrained(tmp_path), model.processor, family)
    loaded.save_pretrained(tmp_path / "resaved")  # saving again writes the new layout
    assert (tmp_path / "resaved" / "processor_config.json").is_file()
    assert_same_processor(AutoProcessor.from_pretrained(tmp_path / "resaved"), model.processor, family)


def test_the_shipped_model_loads_with_auto_processor(default_model):
    proc = AutoProcessor.from_pretrained(DEFAULT_MODEL_DIR)
    assert_same_processor(proc, default_model.processor, "pengi")


def test_release_modes_build_seeded_random_crops(build, gpt2_tokenizer):
    pengi_release = build("pengi", compat="pengi-release", release_crop_seed=5).processor.feature_extractor
    assert pengi_release.settings() == dict(sampling_rate=SR, clip_samples=SR, mix="concat", crop="random",
                                            pad="repeat", crop_seed=5)
    config = clap_tiny(len(gpt2_tokenizer), compat="msclap", release_crop_seed=2, short_audio="repeatpad")
    gpt2_tokenizer.pad_token = "!"  # msclap pads GPT-2 ids with 0
    try:
        msclap = CLAPProcessor(config, gpt2_tokenizer).feature_extractor
    finally:
        gpt2_tokenizer.pad_token = gpt2_tokenizer.eos_token
    assert (msclap.mix, msclap.crop, msclap.pad, msclap.crop_seed) == ("concat", "random", "repeatpad", 2)
    long = [(tone(500, 3.0, SR), SR)]
    again = PengiProcessor.feature_extractor_for(tiny(compat="pengi-release", release_crop_seed=5))
    assert torch.equal(pengi_release(long)["waveforms"], again(long)["waveforms"])  # the same seed, the same crop


def test_feature_extractor_and_config_must_agree(build, byte_bpe, tmp_path):
    model = build("pengi")
    with pytest.raises(ValueError, match="sampling_rate 8000 instead of 16000"):
        PengiProcessor(model.config, byte_bpe, feature_extractor=AudioClipFeatureExtractor(8000, SR))
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    saved["feature_extractor"]["crop"] = "start"
    (tmp_path / "processor_config.json").write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match="crop 'start' instead of 'center'.*using config.json's"):
        loaded = Pengi.from_pretrained(tmp_path)
    assert loaded.processor.feature_extractor.crop == "center"
    release = build("pengi", compat="pengi-release")  # a config changed on purpose while loading: no warning
    release.save_pretrained(tmp_path / "release")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        corrected = Pengi.from_pretrained(tmp_path / "release", compat=None)
    assert (corrected.processor.feature_extractor.mix, corrected.processor.feature_extractor.crop) == ("mean", "center")


# ----------------------------------------------------------------------------- the zero-shot pipeline
def scores_by_label(results: list[dict]) -> torch.Tensor:
    by_label = {r["label"]: r["score"] for r in results}
    return torch.tensor([by_label[label] for label in LABELS])


@pytest.mark.parametrize("family", ["clap", "clap_gpt2", "slap"])
def test_zero_shot_pipeline_scores_as_zero_shot(build, family):
    model = build(family)
    proc = model.processor
    classify = pipeline("zero-shot-audio-classification", model=model, tokenizer=proc.tokenizer,
                        feature_extractor=proc.feature_extractor, device="cpu")
    audio = tone(440, 1.3, SR) + 0.1 * tone(2000, 1.3, SR)  # longer than CLAP's 1 s window: cropped alike
    suffix = getattr(model.config, "text_suffix", "")  # the pipeline tokenizes the template as it is
    template = "This is a sound of {}" + suffix
    got = scores_by_label(classify(audio, candidate_labels=LABELS, hypothesis_template=template))
    expected = model.zero_shot([(audio, SR)], LABELS, template="This is a sound of {label}")[0]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert expected.max() - expected.min() > 1e-4  # the labels are told apart, so equal scores mean something
    if suffix:  # without it the texts differ from the model's
        plain = scores_by_label(classify(audio, candidate_labels=LABELS, hypothesis_template="This is a sound of {}"))
        assert not torch.allclose(plain, expected, atol=1e-5)


def test_zero_shot_pipeline_loads_a_saved_folder(build, tmp_path):
    model = build("clap")
    model.save_pretrained(tmp_path)
    classify = pipeline("zero-shot-audio-classification", model=str(tmp_path), device="cpu")
    audio = tone(440, 0.8, SR)
    got = scores_by_label(classify(audio, candidate_labels=LABELS, hypothesis_template="{}"))
    torch.testing.assert_close(got, model.zero_shot([(audio, SR)], LABELS, template="{label}")[0], atol=1e-5, rtol=0)


def test_forward_computes_the_loss_for_pairs_only(build):
    clap = build("clap")
    proc = clap.processor
    pairs = proc(audio=clips(), texts=["a low tone", "a high tone"])
    assert clap(**pairs).loss is not None and clap(**pairs, return_loss=False).loss is None
    one_clip = {**proc.audio(clips()[:1]), **proc.texts(LABELS)}
    out = clap(**one_clip)
    assert out.loss is None and out.logits_per_audio.shape == (1, 3)
    with pytest.raises(ValueError, match="1 clips and 3 texts"):
        clap(**one_clip, return_loss=True)
    slap = build("slap")
    batch = slap.processor(audio=clips(), texts=["a low tone", "a high tone"])
    assert slap(**batch).loss is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = slap(**slap.processor.audio(clips()[:1]), **slap.processor.texts(LABELS))
    assert out.loss is None and out.logits_per_audio.shape == (1, 3)
    with pytest.raises(ValueError, match="return_loss needs a training batch"):
        slap(**slap.processor.audio(clips()[:1]), **slap.processor.texts(LABELS), return_loss=True)
