"""SLAP's caption decoder: a small causal transformer that cross-attends to the audio tower's patch tokens.

Its loss (next-token cross-entropy on the caption) makes the patch tokens, not only their pooled mean, carry
what is said about the clip, which is what the frame-level features (`SLAP.frames`) and Pengi read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pengi.modules.slap_layers import Block, rope_angles


class CaptionDecoder(nn.Module):
    """Tokens ``(batch, n)`` + audio context ``(batch, L, context_dim)`` with its mask -> next-token logits."""

    def __init__(self, vocab_size: int, dim: int, num_layers: int, num_heads: int, mlp_ratio: float,
                 context_dim: int, dropout: float = 0.0, rope_theta: float = 10000.0):
        super().__init__()
        self.num_heads, self.rope_theta = num_heads, rope_theta
        self.embed = nn.Embedding(vocab_size, dim)
        self.context = nn.Linear(context_dim, dim)
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, dropout, cross=True) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        b, n = ids.shape
        x = self.embed(ids)
        causal = torch.ones(n, n, dtype=torch.bool, device=ids.device).tril()[None].expand(b, n, n)
        cross = context_mask[:, None, :].expand(b, n, context_mask.shape[1])
        positions = torch.arange(n, device=ids.device)[None].expand(b, n)
        rope = rope_angles(positions, x.shape[-1] // self.num_heads, self.rope_theta)
        context = self.context(context.to(x.dtype))
        for block in self.blocks:
            x = block(x, causal, rope, context, cross)
        return F.linear(self.norm(x), self.embed.weight)  # output head tied to the embedding, as GPT-2

    def loss(self, ids: torch.Tensor, mask: torch.Tensor, context: torch.Tensor,
             context_mask: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each real token after the first given the ones before it (right padding ignored)."""
        logits = self(ids[:, :-1], context, context_mask)
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)

    @torch.no_grad()
    def generate(self, context: torch.Tensor, context_mask: torch.Tensor, bos: int, eos: int,
                 max_length: int) -> list[list[int]]:
        """Greedy decoding from ``bos``; each row's tokens up to (not including) ``eos``."""
        ids = torch.full((context.shape[0], 1), bos, dtype=torch.long, device=context.device)
        done = torch.zeros(context.shape[0], dtype=torch.bool, device=context.device)
        for _ in range(max_length):
            nxt = self(ids, context, context_mask)[:, -1].argmax(dim=-1)
            nxt = nxt.masked_fill(done, eos)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= nxt == eos
            if done.all():
                break
        return [row[:row.index(eos)] if eos in row else row for row in ids[:, 1:].tolist()]
