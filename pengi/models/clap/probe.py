"""Classifiers on a CLAP audio encoder, for the CLAP paper's supervised evaluation (arXiv 2206.04769): a head
of one layer ("Freeze L1") or three ("Freeze L3") on the frozen encoder, or the whole model fine-tuned.

The head reads the encoder's projected embedding before L2 normalisation: it is layer-normed, so its scale
suits a head trained at the paper's learning rate whatever the model.
"""

from __future__ import annotations

import torch
from torch import nn

from pengi.models.clap.modeling_clap import CLAP


class ProbeHead(nn.Module):
    """``layers`` 1: a linear layer; 3: linear-ReLU-linear-ReLU-linear, ``hidden`` wide (default ``d_in``)."""

    def __init__(self, d_in: int, num_classes: int, layers: int = 1, hidden: int | None = None):
        super().__init__()
        if layers not in (1, 3):
            raise ValueError(f"a probe head has 1 or 3 layers (Freeze L1 / L3), got {layers}")
        hidden = hidden or d_in
        if layers == 1:
            self.net: nn.Module = nn.Linear(d_in, num_classes)
        else:
            self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class AudioClassifier(nn.Module):
    """A CLAP model's audio encoder with a `ProbeHead`: ``(batch, samples)`` waveforms -> class logits."""

    def __init__(self, clap: CLAP, head: ProbeHead):
        super().__init__()
        self.encoder = clap.audio_encoder
        self.head = head

    def features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """What the head reads: the projected audio embedding, before L2 normalisation."""
        return self.encoder(waveforms.to(self.head_device)).float()

    @property
    def head_device(self) -> torch.device:
        return next(self.head.parameters()).device

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(waveforms))


__all__ = ["AudioClassifier", "ProbeHead"]
