"""Log-mel front end computed on the model's device.

The Hann window and the mel filterbank are buffers, so a checkpoint can carry its own filterbank
(the published Pengi weights store one that differs from the config) and it is used as stored.
The maths stays in float32 whatever the model's dtype: an STFT in bf16 loses the quiet bins.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import nn


class LogMelSpectrogram(nn.Module):
    """Waveforms ``(batch, samples)`` to log-mel features ``(batch, 1, frames, n_mels)`` in dB (power, 10*log10)."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, win_length: int, n_mels: int,
                 f_min: float, f_max: float, amin: float = 1e-10):
        super().__init__()
        self.n_fft, self.hop_length, self.win_length, self.amin = n_fft, hop_length, win_length, amin
        with torch.device("cpu"):  # transformers builds models on the meta device; these are computed, not loaded
            window = torch.hann_window(win_length, periodic=True).clone()  # own storage: safetensors refuses views
            fb = AF.melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate, norm="slaney",
                                    mel_scale="slaney")
        self.register_buffer("window", window)
        self.register_buffer("mel_filters", fb)  # (n_freqs, n_mels), as torchaudio and librosa.T lay it out

    @torch.compiler.disable  # an STFT is complex maths, which inductor does not generate code for
    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            power = AF.spectrogram(waveform.float(), pad=0, window=self.window.float(), n_fft=self.n_fft,
                                   hop_length=self.hop_length, win_length=self.win_length, power=2.0,
                                   normalized=False, center=True, pad_mode="reflect", onesided=True)
            mel = torch.matmul(power.transpose(-1, -2), self.mel_filters.float())  # (batch, frames, n_mels)
            logmel = 10.0 * torch.log10(mel.clamp(min=self.amin))
        return logmel.unsqueeze(1)
