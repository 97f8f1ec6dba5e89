"""What a server is started with: `ServeSettings`, one field per option of `pengi serve` (`pengi.cli.serve` says
what each means)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .audio_input import AudioLimits


@dataclass
class ServeSettings:
    """The settings of one server (the defaults are `pengi serve`'s)."""

    model: str | None = None
    served_model_name: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    max_batch_size: int = 32
    max_wait_ms: float = 10.0
    max_queue: int = 4096
    max_audio_mb: float = 25.0
    max_audio_seconds: float = 600.0
    max_request_mb: float | None = None
    allow_remote_audio: bool = False
    remote_audio_timeout: float = 10.0
    decode_workers: int = 4
    threads: int | None = None  # torch intra-op threads of the model (None: torch's default)
    model_thread: bool = False
    api_key: str | None = None
    allow_origins: list[str] = field(default_factory=list)
    log_level: str = "info"

    @property
    def max_request_bytes(self) -> int:
        """The HTTP body limit: by default one audio file of ``max_audio_mb`` in base64, plus 1 MB."""
        if self.max_request_mb is not None:
            return int(self.max_request_mb * 2**20)
        return int(self.max_audio_mb * 2**20 * 4 / 3) + 2**20

    def limits(self) -> AudioLimits:
        return AudioLimits(int(self.max_audio_mb * 2**20), self.max_audio_seconds, self.allow_remote_audio,
                           self.remote_audio_timeout)
