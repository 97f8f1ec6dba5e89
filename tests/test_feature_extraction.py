"""AudioClipFeatureExtractor: the same clips as pengi's decode + fit (mix, resample, crop, pad, variable length), the
input forms of transformers' feature extractors and pengi's, saving and loading, and clear errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoFeatureExtractor

import pengi  # noqa: F401  (registers the feature extractor with AutoFeatureExtractor)
from pengi.audio import AudioClipFeatureExtractor, fit_length, load_audio
from pengi.errors import PengiInputError

from .conftest import tone

SR = 16000


def sources() -> list:
    """Stereo at 44.1 kHz, a short mono clip, a long datasets dict at 22.05 kHz, a 3-channel tensor at 8 kHz."""
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((2, 30000)).astype(np.float32), 44100), (tone(300, 0.3, SR), SR),
            {"array": rng.standard_normal(70000).astype(np.float32), "sampling_rate": 22050},
            (torch.randn(3, 12345, generator=torch.Generator().manual_seed(1)), 8000)]


def reference(srcs: list, clip: int, mix: str, crop: str, pad: str, generator=None) -> list[torch.Tensor]:
    """Decode and fit each clip with pengi.audio's functions, as every processor did before the feature extractor."""
    return [fit_length(load_audio(s, SR, mix=mix), clip, crop=crop, pad=pad, generator=generator) for s in srcs]


@pytest.mark.parametrize("mix,crop,pad", [("mean", "center", "repeat"), ("mean", "start", "repeatpad"),
                                          ("concat", "center", "zeros"), ("mean", "center", "none"),
                                          ("concat", "start", "none")])
def test_outputs_equal_decode_and_fit(mix, crop, pad):
    fe = AudioClipFeatureExtractor(sampling_rate=SR, clip_samples=SR, mix=mix, crop=crop, pad=pad)
    out = fe(sources(), return_tensors="pt")
    expected = reference(sources(), SR, mix, crop, pad)
    if pad == "none":  # kept whole up to clip_samples, right-padded with zeros, lengths beside
        lengths = [len(w) for w in expected]
        assert out["waveform_lengths"].tolist() == lengths and max(lengths) == SR and min(lengths) < SR
        assert out["waveforms"].shape == (4, SR)
        for row, w in zip(out["waveforms"], expected):
            assert torch.equal(row[:len(w)], w) and not row[len(w):].any()
    else:
        assert set(out) == {"waveforms"} and torch.equal(out["waveforms"], torch.stack(expected))
    assert fe.model_input_names == (["waveforms", "waveform_lengths"] if pad == "none" else ["waveforms"])


def test_seeded_random_crops_repeat_and_survive_saving(tmp_path):
    fe = AudioClipFeatureExtractor(sampling_rate=SR, clip_samples=4000, crop="random", crop_seed=3)
    fe.save_pretrained(tmp_path)  # before any crop is drawn: the generator is state, rebuilt from the seed
    first, second = fe(sources())["waveforms"], fe(sources())["waveforms"]
    generator = torch.Generator().manual_seed(3)
    expected = [reference(sources(), 4000, "mean", "random", "repeat", generator) for _ in range(2)]
    assert torch.equal(first, torch.stack(expected[0])) and torch.equal(second, torch.stack(expected[1]))
    assert not torch.equal(first, second)
    loaded = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert type(loaded) is AudioClipFeatureExtractor and loaded.settings() == fe.settings()
    assert torch.equal(loaded(sources())["waveforms"], first)


def test_transformers_and_pengi_input_forms(tmp_path):
    fe = AudioClipFeatureExtractor(sampling_rate=SR, clip_samples=SR)
    a, b = tone(440, 0.5, SR), tone(880, 1.5, SR)
    sf.write(tmp_path / "b.wav", b, SR, subtype="FLOAT")
    one = fe(a, sampling_rate=SR)["waveforms"]
    assert one.shape == (1, SR) and torch.equal(one[0], fit_length(torch.from_numpy(a), SR))
    assert torch.equal(fe(a.tolist(), sampling_rate=SR)["waveforms"], one)  # a list of floats is one clip
    batch = fe([a, tmp_path / "b.wav", {"array": b, "sampling_rate": SR}], sampling_rate=SR)["waveforms"]
    assert torch.equal(batch[0], one[0]) and torch.equal(batch[1], batch[2])
    rows = np.stack([a, a[::-1].copy()])  # a 2-D array is a batch of mono clips, as in transformers
    assert fe(rows, sampling_rate=SR)["waveforms"].shape == (2, SR)
    assert fe((rows, SR))["waveforms"].shape == (1, SR)  # in an (array, rate) pair it is (channels, samples)
    np_out = fe([a], sampling_rate=SR, return_tensors="np")["waveforms"]
    assert isinstance(np_out, np.ndarray) and np.array_equal(np_out, one.numpy())


def test_other_rates_are_resampled_and_a_missing_rate_is_said(caplog):
    fe = AudioClipFeatureExtractor(sampling_rate=SR, clip_samples=SR)
    low = tone(440, 2.0, 8000)
    assert torch.equal(fe(low, sampling_rate=8000)["waveforms"], fe((low, 8000))["waveforms"])
    with caplog.at_level(logging.WARNING, logger="pengi"):
        assert torch.equal(fe(low)["waveforms"], fe((low, SR))["waveforms"])
    assert "without a sampling_rate" in caplog.text


def test_bad_inputs_and_settings_are_named():
    fe = AudioClipFeatureExtractor(sampling_rate=SR, clip_samples=SR)
    with pytest.raises(PengiInputError, match="array #1: contains 1 NaN"):
        fe([tone(440, 0.5, SR), np.array([0.0, np.nan, 0.0], dtype=np.float32)], sampling_rate=SR)
    with pytest.raises(PengiInputError, match="no audio inputs"):
        fe([], sampling_rate=SR)
    with pytest.raises(ValueError, match="return_tensors"):
        fe(tone(440, 0.5, SR), sampling_rate=SR, return_tensors="tf")
    with pytest.raises(ValueError, match="crop must be one of"):
        AudioClipFeatureExtractor(crop="middle")
    with pytest.raises(ValueError, match="clip_samples must be a positive integer"):
        AudioClipFeatureExtractor(clip_samples=0)
