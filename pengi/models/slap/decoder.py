"""SLAP's caption decoder: transformers' GPT-2 with cross-attention, reading the audio tower's patch tokens.

Its loss (next-token cross-entropy on the caption) makes the patch tokens, not only their pooled mean, carry
what is said about the clip, which is what the frame-level features (`SLAP.frames`) and Pengi read. Being a
transformers causal LM, it decodes with `generate`: KV-cached self-attention, cross-attention keys and values
computed once per clip, and greedy, beam search or sampling by its arguments.

The `GPT2LMHeadModel` is a direct child of `SLAP` (``SLAP.decoder``), so transformers ties its output head to
its token embedding on loading as it does for Pengi's LM; ``SLAP.caption_context`` maps the tower's tokens to
the decoder's width when the two differ.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import GPT2LMHeadModel

from pengi.models.slap.configuration_slap import SLAPConfig


def caption_decoder(config: SLAPConfig) -> GPT2LMHeadModel:
    """The decoder of `SLAPConfig.caption_lm_config`, trained with its own causal-LM loss."""
    lm = GPT2LMHeadModel(config.caption_lm_config())
    lm.loss_type = "ForCausalLM"  # GPT2LMHeadModel's name does not say which loss is its own
    return lm


def caption_context(config: SLAPConfig) -> nn.Module:
    """Tower tokens -> decoder width: identity when the widths are equal (the cross-attention's key and value
    projections are linear already), else a linear map."""
    width, dim = config.audio_config.hidden_size, config.caption_hidden_size
    return nn.Identity() if width == dim else nn.Linear(width, dim)


def caption_loss(lm: GPT2LMHeadModel, ids: torch.Tensor, mask: torch.Tensor, states: torch.Tensor,
                 state_mask: torch.Tensor) -> torch.Tensor:
    """The LM's cross-entropy of each real caption token after the first given the ones before it and the
    clip's states ``(batch, L, dim)`` with their mask (right padding ignored on both sides)."""
    return lm(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100),
              encoder_hidden_states=states.to(lm.dtype), encoder_attention_mask=state_mask.long(),
              use_cache=False).loss


@torch.no_grad()
def generate_captions(lm: GPT2LMHeadModel, states: torch.Tensor, state_mask: torch.Tensor, bos: int, eos: int,
                      pad: int, max_new_tokens: int, **generate_kwargs: Any) -> torch.Tensor:
    """New token ids ``(batch * num_return_sequences, n)`` after ``bos``: greedy unless the arguments say
    otherwise, KV-cached; rows that ended early are padded with ``pad``."""
    start = torch.full((states.shape[0], 1), bos, dtype=torch.long, device=states.device)
    settings: dict[str, Any] = dict(do_sample=False, num_beams=1)
    settings.update(generate_kwargs)
    out = lm.generate(input_ids=start, attention_mask=torch.ones_like(start), encoder_hidden_states=states.to(lm.dtype),
                      encoder_attention_mask=state_mask.long(), max_new_tokens=max_new_tokens, bos_token_id=bos,
                      eos_token_id=eos, pad_token_id=pad, use_cache=True, **settings)
    return out[:, 1:]


def until_end(ids: torch.Tensor, eos: int) -> list[list[int]]:
    """Each row's tokens up to (not including) its first ``eos``."""
    return [row[:row.index(eos)] if eos in row else row for row in ids.tolist()]
