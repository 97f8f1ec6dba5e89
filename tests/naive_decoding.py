"""Greedy decoding the way the published Pengi code does it: re-run the LM over the whole sequence each step.

Kept as a reference: tests check that the KV-cached `Pengi.generate` gives the same tokens, and the
captioning benchmark measures how much faster the cached path is.
"""

from __future__ import annotations

import torch


@torch.inference_mode()
def greedy_decode_without_cache(lm: torch.nn.Module, prefix: torch.Tensor, max_new_tokens: int,
                                eos_token_id: int) -> list[list[int]]:
    """Greedy token ids for each prefix ``(batch, length, d_lm)``, up to and excluding the first EOS."""
    outputs = []
    embed = lm.get_input_embeddings()
    for row in prefix:
        embeds, tokens = row.unsqueeze(0), []
        for _ in range(max_new_tokens):
            logits = lm(inputs_embeds=embeds, use_cache=False).logits[0, -1]
            token = int(logits.argmax())
            if token == eos_token_id:
                break
            tokens.append(token)
            embeds = torch.cat([embeds, embed(torch.tensor([[token]], device=prefix.device))], dim=1)
        outputs.append(tokens)
    return outputs
