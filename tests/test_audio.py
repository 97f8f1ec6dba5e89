"""Audio input: decoding real files, downmixing, resampling, length policy, windows and every bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from pengi.audio import fit_length, load_audio, split_windows
from pengi.errors import PengiInputError

from .conftest import tone


def peak_hz(wave: torch.Tensor, sr: int) -> float:
    spec = np.abs(np.fft.rfft(wave.numpy()))
    return float(np.argmax(spec) * sr / len(wave))


@pytest.mark.parametrize("name,sr,seconds", [("tone.wav", 16000, 1.0), ("stereo44k.flac", 44100, 1.5),
                                              ("short.ogg", 22050, 0.3)])
def test_files_decode_resample_and_keep_pitch(audio_dir, name, sr, seconds):
    wave = load_audio(audio_dir / name, 16000)
    assert wave.dtype == torch.float32 and wave.ndim == 1
    assert abs(len(wave) - seconds * 16000) <= 2
    expected = {"tone.wav": 440, "stereo44k.flac": 1000, "short.ogg": 300}[name]
    assert abs(peak_hz(wave, 16000) - expected) < 5


def test_mp3_decodes(tmp_path):
    sf.write(tmp_path / "a.mp3", tone(500, 1.0, 44100), 44100, format="MP3")
    wave = load_audio(tmp_path / "a.mp3", 16000)
    assert abs(len(wave) / 16000 - 1.0) < 0.1 and abs(peak_hz(wave, 16000) - 500) < 10


def test_multichannel_is_averaged_and_release_mode_concatenates():
    left = np.ones(100, dtype=np.float32)
    right = np.zeros(100, dtype=np.float32)
    stereo = np.stack([left, right])
    assert torch.allclose(load_audio((stereo, 8000), 8000), torch.full((100,), 0.5))
    concat = load_audio((stereo, 8000), 8000, mix="concat")
    assert len(concat) == 200 and concat[:100].eq(1).all() and concat[100:].eq(0).all()


def test_array_inputs_int16_tensor_and_datasets_dict():
    ints = (np.ones(50) * 16384).astype(np.int16)
    assert torch.allclose(load_audio((ints, 100), 100), torch.full((50,), 0.5))
    t = torch.linspace(-1, 1, 64)
    assert torch.equal(load_audio((t, 64), 64), t)
    d = load_audio({"array": t.numpy(), "sampling_rate": 64}, 64)
    assert torch.equal(d, t)


@pytest.mark.parametrize("name,content,problem", [
    ("missing.wav", None, "file not found"),
    ("", None, "is a directory"),
    ("empty.wav", b"", "empty (0 bytes)"),
    ("junk.wav", b"RIFF" + bytes(range(200)), "cannot decode"),
    ("truncated.flac", b"fLaC" + bytes(50), "cannot decode"),
    ("notes.txt", b"hello world " * 20, "unsupported audio format"),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path, name, content, problem):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PengiInputError) as err:
        load_audio(path, 16000)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_zero_length_file(tmp_path):
    sf.write(tmp_path / "zero.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(PengiInputError, match="zero.wav: contains no audio samples"):
        load_audio(tmp_path / "zero.wav", 16000)


@pytest.mark.parametrize("array,sr,problem", [
    (np.full(100, np.nan, dtype=np.float32), 16000, "100 NaN or infinite samples"),
    (np.array([0.0, np.inf, 0.1], dtype=np.float32), 16000, "1 NaN or infinite samples"),
    (np.zeros((2, 3, 4), dtype=np.float32), 16000, "must be 1-D"),
    (np.zeros((1000, 2), dtype=np.float32), 16000, "transpose"),
    (np.zeros(10, dtype=np.float32), 0, "sample rate must be a positive integer"),
    (np.zeros(10, dtype=np.float32), 1.5, "sample rate must be a positive integer"),
    (np.array(["a", "b"]), 16000, "unsupported dtype"),
])
def test_bad_arrays(array, sr, problem):
    with pytest.raises(PengiInputError, match="array") as err:
        load_audio((array, sr), 16000)
    assert problem in str(err.value)


def test_nan_in_file(tmp_path):
    x = tone(440, 0.5, 16000)
    x[100] = np.nan
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(PengiInputError, match="nan.wav: contains 1 NaN"):
        load_audio(tmp_path / "nan.wav", 16000)


def test_array_without_sample_rate_is_rejected():
    with pytest.raises(PengiInputError, match="give a file path, an \\(array, sample_rate\\) pair"):
        load_audio(np.zeros(10), 16000)


def test_fit_length_repeats_short_and_crops_long_deterministically():
    short = torch.arange(3.0)
    assert fit_length(short, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    long = torch.arange(10.0)
    assert fit_length(long, 4).tolist() == [3, 4, 5, 6]
    assert fit_length(long, 4, crop="start").tolist() == [0, 1, 2, 3]
    a = fit_length(long, 4, crop="random", generator=torch.Generator().manual_seed(3))
    b = fit_length(long, 4, crop="random", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    starts = {int(fit_length(long, 4, crop="random", generator=torch.Generator().manual_seed(s))[0])
              for s in range(30)}
    assert len(starts) > 1


def test_windows_cover_the_recording():
    wave = torch.arange(25.0)
    wins = split_windows(wave, sample_rate=10, window=10)
    assert [(w.start, w.end) for w in wins] == [(0.0, 1.0), (1.0, 2.0), (2.0, 2.5)]
    assert wins[2].wave.tolist() == [20, 21, 22, 23, 24, 20, 21, 22, 23, 24]
    overlap = split_windows(wave, sample_rate=10, window=10, hop=5)
    assert [(w.start, w.end) for w in overlap] == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5)]
    assert [(w.start, w.end) for w in split_windows(torch.ones(4), 10, 10)] == [(0.0, 0.4)]
