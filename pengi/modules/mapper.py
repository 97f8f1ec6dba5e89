"""ClipCap-style transformer mapper: turns one embedding (or a few tokens) into a prefix of LM embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MapperAttention(nn.Module):
    """Multi-head self-attention with a bias-free query and fused key/value projection (ClipCap's layout)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"mapper width {dim} is not divisible by {num_heads} heads")
        self.num_heads, self.dropout = num_heads, dropout
        self.to_queries = nn.Linear(dim, dim, bias=False)
        self.to_keys_values = nn.Linear(dim, 2 * dim, bias=False)
        self.project = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        h = self.num_heads
        q = self.to_queries(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = self.to_keys_values(x).view(b, n, 2, h, d // h).unbind(dim=2)  # keys first, then values
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.project(out.transpose(1, 2).reshape(b, n, d))


class MapperMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.relu(self.fc1(x)))))


class MapperBlock(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MapperAttention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MapperMLP(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_padding_mask)
        return x + self.mlp(self.norm2(x))


class MapperTransformer(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_layers: int, mlp_ratio: float, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(MapperBlock(dim, num_heads, mlp_ratio, dropout) for _ in range(num_layers))

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, key_padding_mask)
        return x


class TransformerMapper(nn.Module):
    """Make ``prefix_length`` LM input embeddings from an embedding vector or from a sequence of tokens.

    With ``d_in`` set, a vector ``(batch, d_in)`` is expanded by ``linear`` into ``prefix_length`` tokens.
    With ``d_in=None`` the input is already a token sequence ``(batch, n, dim)`` (prompt tokens embedded by
    the LM) with an optional boolean ``mask`` (True = real token). Learned constants are appended, the
    transformer runs over both, and the outputs at the constants' positions are the prefix. Padded tokens
    are masked out of the attention, so a prompt's prefix does not depend on how much it was padded.
    """

    def __init__(self, d_in: int | None, dim: int, prefix_length: int, num_layers: int, num_heads: int,
                 mlp_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        self.prefix_length = prefix_length
        self.linear = nn.Linear(d_in, prefix_length * dim) if d_in is not None else None
        self.prefix_const = nn.Parameter(torch.randn(prefix_length, dim))
        self.transformer = MapperTransformer(dim, num_heads, num_layers, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x.to(self.prefix_const.dtype)  # e.g. token embeddings of an LM held in bf16 (`Pengi.hold_frozen_in`)
        if self.linear is not None:
            x = self.linear(x).view(x.shape[0], self.prefix_length, -1)
            mask = None
        const = self.prefix_const.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        tokens = torch.cat([x, const], dim=1)
        key_mask = None
        if mask is not None:
            ones = torch.ones(x.shape[0], self.prefix_length, dtype=torch.bool, device=x.device)
            key_mask = torch.cat([mask.bool(), ones], dim=1)
        return self.transformer(tokens, key_mask)[:, -self.prefix_length:]
