"""CNN14 (PANNs, Kong et al. 2020): the audio encoder of msclap 2022, as plain PyTorch.

Input is a log-mel image ``(batch, 1, frames, n_mels)``; output one embedding per clip (``fc1``'s width).
Parameter names follow PANNs and msclap (``bn0``, ``conv_block1.conv1``, ``fc1``), so their checkpoints map
one to one. The AudioSet classifier (``fc_audioset``) is not part of the encoder: CLAP never uses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pengi.modules.configuration_cnn14 import Cnn14Config


class ConvBlock(nn.Module):
    """Two 3x3 conv + batch-norm + ReLU layers, then average pooling."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool)


class Cnn14(nn.Module):
    """Log-mel ``(batch, 1, frames, n_mels)`` -> clip embedding ``(batch, channels[-1])``."""

    def __init__(self, config: Cnn14Config):
        super().__init__()
        self.config = config
        self.bn0 = nn.BatchNorm2d(config.num_mel_bins)
        widths = [1] + config.channels
        for i in range(6):
            self.add_module(f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(config.channels[-1], config.channels[-1])
        self.num_features = config.channels[-1]

    @property
    def dtype(self) -> torch.dtype:
        return self.fc1.weight.dtype

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.bn0(mel.transpose(1, 3)).transpose(1, 3)  # normalise each mel bin
        p = self.config.dropout
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x, (2, 2) if i < 5 else (1, 1))
            x = F.dropout(x, p, self.training)
        x = x.mean(dim=3)  # over frequency: (batch, channels, time)
        x = x.max(dim=2).values + x.mean(dim=2)
        x = F.dropout(x, 0.5, self.training)
        return F.dropout(F.relu(self.fc1(x)), 0.5, self.training)
