"""Audio in requests: base64 strings, ``data:`` URLs, uploaded files and (opt-in) remote URLs, decoded and checked.

Every check names the request field it found the problem in and says what is wrong: not base64, not audio, empty,
zero length, NaN samples, larger than ``--max-audio-mb`` (HTTP 413, checked on the bytes before decoding) or longer
than ``--max-audio-seconds`` (checked on the file's header before decoding, and again on the decoded samples).
Decoding (soundfile) and resampling to the model's rate (the model's processor, as `Pengi.generate` does) are
blocking, so the server runs `load_clip` in a thread pool, never on its event loop.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
import torch

from pengi import PengiInputError

from .errors import APIError, bad_request

FORMATS = ("wav", "flac", "mp3", "ogg")
FORMAT_ALIASES = {"wave": "wav", "x-wav": "wav", "vnd.wave": "wav", "x-flac": "flac", "mpeg": "mp3", "mpeg3": "mp3",
                  "x-mp3": "mp3", "oga": "ogg", "opus": "ogg", "vorbis": "ogg", "x-ogg": "ogg"}
SNDFILE_FORMATS = {"wav": "WAV", "flac": "FLAC", "mp3": "MP3", "ogg": "OGG"}
UNDECODABLE = {"webm", "m4a", "mp4", "aac", "x-m4a", "3gpp", "amr", "wma"}
_WHITESPACE = re.compile(rb"\s+")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_BASE64_URLSAFE = re.compile(rb"[A-Za-z0-9_-]*={0,2}")
_DATA_URL = re.compile(r"^data:(?P<type>[^;,]*)(?P<params>(;[^;,]*)*?),(?P<data>.*)$", re.DOTALL)


@dataclass(frozen=True)
class AudioLimits:
    max_bytes: int = 25 * 1024 * 1024
    max_seconds: float = 600.0
    allow_remote: bool = False
    remote_timeout: float = 10.0

    @property
    def max_mb(self) -> float:
        return self.max_bytes / (1024 * 1024)


@dataclass
class AudioRef:
    """One audio input of a request, not decoded yet. ``data`` is a base64 string, a URL or raw bytes."""

    param: str  # the request field, e.g. "messages[0].content[1].input_audio.data"
    kind: str  # "base64", "url" or "bytes"
    data: Any
    format: str | None = None
    name: str | None = None  # an uploaded file's name, for messages and results

    @property
    def label(self) -> str:
        return f"{self.param} ({self.name})" if self.name else self.param


@dataclass
class Clip:
    """Decoded audio: mono float32 at the model's sample rate."""

    wave: torch.Tensor
    seconds: float
    name: str


def normalize_format(fmt: Any, param: str) -> str | None:
    """``"wav"``, ``"audio/x-wav"``, ``"FLAC"`` ... -> one of `FORMATS` (None when not given)."""
    if fmt is None or fmt == "":
        return None
    if not isinstance(fmt, str):
        raise bad_request(f"{param}: the audio format must be a string, one of {', '.join(FORMATS)}", param)
    name = fmt.strip().lower().removeprefix("audio/").split(";")[0].strip()
    name = FORMAT_ALIASES.get(name, name)
    if name in FORMATS:
        return name
    if name in UNDECODABLE:
        raise bad_request(f"{param}: {fmt!r} audio cannot be decoded here (no FFmpeg); send wav, flac, ogg or mp3 "
                          "(the web page converts recordings to wav in the browser)", param, "unsupported_format")
    raise bad_request(f"{param}: unknown audio format {fmt!r}; use one of {', '.join(FORMATS)}", param,
                      "unsupported_format")


def check_size(nbytes: int, limits: AudioLimits, label: str, param: str | None = None) -> None:
    if nbytes > limits.max_bytes:
        raise APIError(f"{label}: the audio is {nbytes / 2**20:.1f} MB, over the limit of {limits.max_mb:g} MB "
                       "(--max-audio-mb)", status=413, param=param, code="audio_too_large")


def decode_base64(data: Any, limits: AudioLimits, label: str, param: str) -> bytes:
    if not isinstance(data, str):
        raise bad_request(f"{label}: expected a base64 string, got {type(data).__name__}", param, "invalid_base64")
    check_size(len(data) * 3 // 4, limits, label, param)  # refuse before decoding when the text alone is too long
    try:  # the usual case, at C speed: standard alphabet, padded, no line breaks
        out = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        out = _decode_base64_leniently(data, label, param)
    if not out:
        raise bad_request(f"{label}: the audio is empty (no base64 data)", param, "empty_audio")
    check_size(len(out), limits, label, param)
    return out


def _decode_base64_leniently(data: str, label: str, param: str) -> bytes:
    """Line breaks, missing padding and the URL-safe alphabet are accepted; anything else is not base64."""
    raw = _WHITESPACE.sub(b"", data.encode("ascii", "replace"))
    raw += b"=" * (-len(raw) % 4)
    try:
        if _BASE64.fullmatch(raw):
            return base64.b64decode(raw, validate=True)
        if _BASE64_URLSAFE.fullmatch(raw):
            return base64.urlsafe_b64decode(raw)
        raise ValueError
    except (binascii.Error, ValueError):
        raise bad_request(f"{label}: the audio data is not valid base64", param, "invalid_base64") from None


def parse_data_url(url: str, limits: AudioLimits, label: str, param: str) -> tuple[bytes, str | None]:
    match = _DATA_URL.match(url)
    if match is None:
        raise bad_request(f"{label}: malformed data: URL (expected data:audio/wav;base64,...)", param,
                          "invalid_audio_url")
    if ";base64" not in match["params"].lower():
        raise bad_request(f"{label}: the data: URL must be base64-encoded (data:audio/wav;base64,...)", param,
                          "invalid_audio_url")
    fmt = normalize_format(match["type"], param) if match["type"].lower().startswith("audio/") else None
    return decode_base64(match["data"], limits, label, param), fmt


def fetch_url(url: str, limits: AudioLimits, label: str, param: str) -> bytes:
    """Download a remote clip (http/https only; the caller has checked that remote audio is allowed)."""
    request = urllib.request.Request(url, headers={"User-Agent": "pengi-serve"})
    try:
        with urllib.request.urlopen(request, timeout=limits.remote_timeout) as response:  # noqa: S310 (scheme checked)
            length = response.headers.get("Content-Length")
            if length and length.isdigit():
                check_size(int(length), limits, label, param)
            data = response.read(limits.max_bytes + 1)
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as err:
        reason = f"HTTP {err.code} {err.reason}" if isinstance(err, urllib.error.HTTPError) else \
            getattr(err, "reason", err)
        raise bad_request(f"{label}: cannot fetch {url}: {reason}", param, "audio_url_unreachable") from None
    check_size(len(data), limits, label, param)
    return data


def resolve(ref: AudioRef, limits: AudioLimits) -> tuple[bytes, str | None]:
    """The raw bytes of an audio input, and its declared format if any."""
    if ref.kind == "bytes":
        check_size(len(ref.data), limits, ref.label, ref.param)
        return ref.data, ref.format
    if ref.kind == "base64":
        return decode_base64(ref.data, limits, ref.label, ref.param), ref.format
    url = ref.data
    if not isinstance(url, str) or not url.strip():
        raise bad_request(f"{ref.label}: expected a URL string", ref.param, "invalid_audio_url")
    url = url.strip()
    if url[:5].lower() == "data:":
        return parse_data_url(url, limits, ref.label, ref.param)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise bad_request(f"{ref.label}: unsupported URL scheme {scheme or '(none)'!r}; send a data:audio/...;"
                          "base64 URL (or, with --allow-remote-audio, an http(s) URL)", ref.param, "invalid_audio_url")
    if not limits.allow_remote:
        raise bad_request(f"{ref.label}: remote audio URLs are disabled on this server; send the audio as base64 "
                          "(input_audio, or a data:audio/wav;base64,... URL), or start the server with "
                          "--allow-remote-audio", ref.param, "remote_audio_disabled")
    return fetch_url(url, limits, ref.label, ref.param), ref.format


def _open(data: bytes, fmt: str | None) -> sf.SoundFile:
    try:
        return sf.SoundFile(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        if fmt is None:
            raise
        return sf.SoundFile(io.BytesIO(data), format=SNDFILE_FORMATS[fmt])  # e.g. raw MPEG frames with no tag


def load_clip(ref: AudioRef, processor: Any, limits: AudioLimits) -> Clip:
    """Resolve, decode and check one audio input; return it mono at the model's sample rate (``processor.load``)."""
    data, fmt = resolve(ref, limits)
    label = ref.label
    if not data:
        raise bad_request(f"{label}: the audio is empty (0 bytes)", ref.param, "empty_audio")
    try:
        with _open(data, fmt) as f:
            frames, sr = f.frames, f.samplerate
            if frames == 0:
                raise bad_request(f"{label}: the audio contains no samples (zero length)", ref.param, "empty_audio")
            if sr > 0 and frames / sr > limits.max_seconds:
                raise _too_long(label, frames / sr, limits, ref.param)
            array = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        what = f"a {fmt} file" if fmt else "audio in a format this server reads (wav, flac, ogg, mp3)"
        detail = str(err).split(": ", 1)[-1] if "Error opening" in str(err) else str(err)
        raise bad_request(f"{label}: cannot decode the audio: it is not {what} ({detail})", ref.param,
                          "invalid_audio") from None
    if array.shape[0] == 0:
        raise bad_request(f"{label}: the audio contains no samples (zero length)", ref.param, "empty_audio")
    try:
        wave = processor.load((np.ascontiguousarray(array.T), sr), name=label)
    except PengiInputError as err:
        code = "invalid_audio_samples" if "NaN" in err.problem else "invalid_audio"
        raise bad_request(f"{label}: {err.problem}", ref.param, code) from None
    seconds = wave.shape[-1] / processor.sample_rate
    if seconds > limits.max_seconds:
        raise _too_long(label, seconds, limits, ref.param)
    return Clip(wave, seconds, ref.name or ref.param)


def _too_long(label: str, seconds: float, limits: AudioLimits, param: str) -> APIError:
    return APIError(f"{label}: the audio is {seconds:.1f} s long, over the limit of {limits.max_seconds:g} s "
                    "(--max-audio-seconds)", status=400, param=param, code="audio_too_long")
