"""Audio input shared by every model: decoding and resampling (`decode`), clips and windows (`clips`), the log-mel
front end (`frontend`) and the front-end settings of model configs (`settings`)."""

from pengi.audio.clips import ClipLoader, Window, fit_length, split_windows
from pengi.audio.decode import AudioSource, describe_source, load_audio

__all__ = ["AudioSource", "ClipLoader", "Window", "describe_source", "fit_length", "load_audio", "split_windows"]
