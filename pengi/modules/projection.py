"""The projection heads of the encoders: Pengi's (and msclap's) and LAION-CLAP's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pengi.modules.configuration_encoders import PROJECTIONS


class Projection(nn.Module):
    """Map encoder outputs into the joint space: ``LayerNorm(h + dropout(linear2(gelu(h))))`` with ``h = linear1(x)``.

    Parameter names and the bias-free linears follow the published Pengi and msclap checkpoints.
    """

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.5):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear1(x)
        return self.layer_norm(h + self.drop(self.linear2(F.gelu(h))))


class MLPProjection(nn.Module):
    """LAION-CLAP's projection: ``linear2(relu(linear1(x)))``, both linears with biases (transformers'
    ``ClapProjectionLayer`` names, so its weights map one to one)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out)
        self.linear2 = nn.Linear(d_out, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.relu(self.linear1(x)))


def make_projection(kind: str, d_in: int, d_out: int, dropout: float = 0.5) -> nn.Module:
    """``"pengi"``: `Projection` (Pengi, msclap); ``"mlp"``: `MLPProjection` (LAION-CLAP)."""
    if kind == "pengi":
        return Projection(d_in, d_out, dropout)
    if kind == "mlp":
        return MLPProjection(d_in, d_out)
    raise ValueError(f"projection must be one of {PROJECTIONS}, got {kind!r}")
