"""HTSAT's window attention through `F.scaled_dot_product_attention`.

transformers' `ClapAudioModel` (HTSAT, a Swin transformer) computes its window attention eagerly: scores,
relative position bias, shift mask, softmax and dropout as separate kernels, and it offers no
``attn_implementation`` to change that. `SdpaClapAudioSelfAttention` computes the same attention with one
fused call, the relative position bias and the shifted windows' mask passed as its additive mask. It is a
subclass with the same parameters and buffers, so checkpoints (converted Pengi, msclap, LAION-CLAP) load as
before; `set_htsat_attention` switches a model's attention modules in place either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.clap.modeling_clap import ClapAudioSelfAttention

HTSAT_ATTENTION = ("sdpa", "eager")


class SdpaClapAudioSelfAttention(ClapAudioSelfAttention):
    """`ClapAudioSelfAttention` with one `F.scaled_dot_product_attention` call; asked for the attention
    probabilities (``output_attentions``), it computes them eagerly as the parent does."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_attentions: bool | None = False) -> tuple[torch.Tensor, ...]:
        if output_attentions:
            return super().forward(hidden_states, attention_mask, output_attentions)
        windows, tokens, _ = hidden_states.shape  # batch * windows per clip, tokens per window, channels
        heads, size = self.num_attention_heads, self.attention_head_size
        shape = (windows, tokens, heads, size)
        query = self.query(hidden_states).view(shape).transpose(1, 2)
        key = self.key(hidden_states).view(shape).transpose(1, 2)
        value = self.value(hidden_states).view(shape).transpose(1, 2)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(tokens, tokens, heads).permute(2, 0, 1).unsqueeze(0)  # (1, heads, tokens, tokens)
        if attention_mask is not None:
            # The shift mask is per window position (mask_windows, tokens, tokens), the same for every clip.
            per_window = attention_mask.shape[0]
            bias = (bias + attention_mask.unsqueeze(1).to(bias.dtype)).unsqueeze(0)
            bias = bias.expand(windows // per_window, -1, -1, -1, -1).reshape(windows, heads, tokens, tokens)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.to(query.dtype),
                                                 dropout_p=self.dropout.p if self.training else 0.0)
        return (context.transpose(1, 2).reshape(windows, tokens, heads * size),)


def set_htsat_attention(module: nn.Module, implementation: str) -> int:
    """Make every HTSAT attention module inside ``module`` use ``implementation`` ("sdpa" or "eager", the
    transformers code as written). Returns how many were switched; the weights are untouched."""
    if implementation not in HTSAT_ATTENTION:
        raise ValueError(f"HTSAT attention must be one of {', '.join(HTSAT_ATTENTION)}, got {implementation!r}")
    target = SdpaClapAudioSelfAttention if implementation == "sdpa" else ClapAudioSelfAttention
    switched = 0
    for sub in module.modules():
        if isinstance(sub, ClapAudioSelfAttention) and type(sub) is not target:
            sub.__class__ = target
            switched += 1
    return switched


def htsat_attention(module: nn.Module) -> str | None:
    """The attention implementation the HTSAT modules inside ``module`` use, or None if it has none."""
    for sub in module.modules():
        if isinstance(sub, ClapAudioSelfAttention):
            return "sdpa" if isinstance(sub, SdpaClapAudioSelfAttention) else "eager"
    return None
