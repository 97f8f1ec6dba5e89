"""Audio input shared by every model: decoding and resampling (`decode`), clips and windows (`clips`), a model's
waveform settings as a transformers feature extractor (`feature_extraction`) and the log-mel front end
(`frontend`)."""

from pengi.audio.clips import ClipLoader, Window, fit_length, split_windows
from pengi.audio.decode import AudioSource, describe_source, load_audio
from pengi.audio.feature_extraction import AudioClipFeatureExtractor

__all__ = ["AudioClipFeatureExtractor", "AudioSource", "ClipLoader", "Window", "describe_source", "fit_length",
           "load_audio", "split_windows"]
