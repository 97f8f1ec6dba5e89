"""Running `pengi serve` for the tests: a real server process on a free port, and audio as request parts."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import soundfile as sf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m pengi.cli serve ARGS --port P`` in a subprocess; `start` waits until /health answers."""

    def __init__(self, *args: str, log_path: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.args = [sys.executable, "-m", "pengi.cli", "serve", "--port", str(self.port), *map(str, args)]
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ServerProcess:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not start in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def encode(audio: np.ndarray, sample_rate: int, fmt: str = "wav", subtype: str | None = None) -> bytes:
    """Audio ``(samples,)`` or ``(samples, channels)`` as the bytes of a file in ``fmt``."""
    formats = {"wav": ("WAV", subtype or "PCM_16"), "flac": ("FLAC", subtype or "PCM_16"),
               "ogg": ("OGG", subtype or "VORBIS"), "mp3": ("MP3", subtype or "MPEG_LAYER_III")}
    container, sub = formats[fmt]
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format=container, subtype=sub)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def audio_message(data: bytes, prompt: str | None = "generate audio caption", fmt: str = "wav") -> list[dict]:
    content: list[dict] = []
    if prompt is not None:
        content.append({"type": "text", "text": prompt})
    content.append({"type": "input_audio", "input_audio": {"data": b64(data), "format": fmt}})
    return [{"role": "user", "content": content}]


def metric_samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric in Prometheus text format (labels as written, "" when none)."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            out[key[len(name):]] = float(value)
    return out


def batch_histogram(metrics_text: str) -> tuple[dict[float, float], float, float]:
    """The batch-size histogram: ``({upper bound: cumulative count}, count, sum)``."""
    samples = metric_samples(metrics_text, "pengi_batch_size_bucket")
    buckets = {float(k.split('"')[1].replace("+Inf", "inf")): v for k, v in samples.items()}
    count = metric_samples(metrics_text, "pengi_batch_size_count")[""]
    total = metric_samples(metrics_text, "pengi_batch_size_sum")[""]
    return buckets, count, total
