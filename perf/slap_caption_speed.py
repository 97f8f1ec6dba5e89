"""SLAP caption decoding speed: the GPT-2 decoder's KV-cached `generate` against the loop it replaced.

    python -m perf.slap_caption_speed --device cpu
    python -m perf.slap_caption_speed --device cuda --batch-size 32

Three ways to decode ``--batch-size`` clips greedily, for ``--lengths`` new tokens each (no early end, so every
way decodes the same number of tokens):

* old decoder: SLAP's hand-written RoPE decoder before this change (kept below as the baseline), same shapes,
  its loop re-running the whole sequence and the cross-attention's keys and values at every step;
* old loop, GPT-2: that loop on today's GPT-2 decoder, same weights as `generate`, so their tokens must agree
  (checked); it isolates what the KV cache saves;
* generate: `pengi.models.slap.decoder.generate_captions` (transformers `generate`, what `SLAP.caption` runs).

The decoder has `slap-base`'s caption shapes (width 256, 2 blocks, 4 heads, MLP 4x, BERT's 30,522-token
vocabulary) with random weights; it reads the tokens of `slap-base`'s tower (width 384, 4 bands per 0.16 s) for
clips of ``--seconds`` (random values: the cost does not depend on them, and the tower runs once either way).
Times are the median of ``--repeats`` after a warm-up; the ratios are against the two old ways in the same run.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import transformers
from torch import nn

from pengi.models.slap.decoder import caption_context, caption_decoder, generate_captions
from pengi.modules.slap_layers import apply_rope, rope_angles
from pengi.presets import slap_base
from perf.timing import median_time

BOS, EOS, PAD = 101, 102, 0  # BERT's [CLS], [SEP], [PAD]


class OldAttention(nn.Module):
    """The old decoder's attention: self-attention with rotary positions, or cross-attention to ``context``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, x, mask, rope=None, context=None):
        b, n, d = x.shape
        h, source = self.num_heads, x if context is None else context
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(source).view(b, source.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class OldBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), OldAttention(dim, num_heads)
        self.norm_cross, self.cross = nn.LayerNorm(dim), OldAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x, mask, rope, context, context_mask):
        x = x + self.attn(self.norm1(x), mask, rope)
        x = x + self.cross(self.norm_cross(x), context_mask, context=context)
        return x + self.mlp(self.norm2(x))


class OldCaptionDecoder(nn.Module):
    """SLAP's caption decoder before GPT-2 (pengi/models/slap/decoder.py and the cross-attention of
    pengi/modules/slap_layers.py at 744e510), for the baseline only."""

    def __init__(self, vocab_size: int, dim: int, num_layers: int, num_heads: int, mlp_ratio: float,
                 context_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.embed = nn.Embedding(vocab_size, dim)
        self.context = nn.Linear(context_dim, dim)
        self.blocks = nn.ModuleList(OldBlock(dim, num_heads, mlp_ratio) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        b, n = ids.shape
        x = self.embed(ids)
        causal = torch.ones(n, n, dtype=torch.bool, device=ids.device).tril()[None].expand(b, n, n)
        cross = context_mask[:, None, :].expand(b, n, context_mask.shape[1])
        rope = rope_angles(torch.arange(n, device=ids.device)[None].expand(b, n), x.shape[-1] // self.num_heads)
        context = self.context(context.to(x.dtype))
        for block in self.blocks:
            x = block(x, causal, rope, context, cross)
        return F.linear(self.norm(x), self.embed.weight)

    @torch.no_grad()
    def generate(self, context: torch.Tensor, context_mask: torch.Tensor, steps: int) -> torch.Tensor:
        ids = torch.full((context.shape[0], 1), BOS, dtype=torch.long, device=context.device)
        for _ in range(steps):
            ids = torch.cat([ids, self(ids, context, context_mask)[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
        return ids[:, 1:]


@torch.no_grad()
def rerun_loop(lm, states: torch.Tensor, mask: torch.Tensor, steps: int) -> torch.Tensor:
    """The old loop on the GPT-2 decoder: the whole sequence again at every step, no cache (EOS masked, as
    ``min_new_tokens`` masks it for `generate`)."""
    ids = torch.full((states.shape[0], 1), BOS, dtype=torch.long, device=states.device)
    for _ in range(steps):
        logits = lm(input_ids=ids, encoder_hidden_states=states, encoder_attention_mask=mask, use_cache=False).logits
        logits = logits[:, -1].float()
        logits[:, EOS] = float("-inf")
        ids = torch.cat([ids, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return ids[:, 1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, nargs="+", default=[5, 10, 20, 30],
                        help="clip durations, cycled over the batch (their tokens are right-padded, with a mask)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)

    config = slap_base(vocab_size=30522, caption_max_length=max(args.lengths))
    torch.manual_seed(0)
    lm = caption_decoder(config).eval().to(device=device, dtype=dtype)
    context = caption_context(config).eval().to(device=device, dtype=dtype)
    old = OldCaptionDecoder(config.vocab_size, config.caption_hidden_size, config.caption_layers,
                            config.caption_heads, config.audio_config.mlp_ratio,
                            config.audio_config.hidden_size).eval().to(device=device, dtype=dtype)
    a = config.audio_config
    steps_per_clip = [-(-(int(s * config.sample_rate) // config.hop_length + 1) // a.patch_frames) * a.num_bands
                      for s in args.seconds]
    lengths = [steps_per_clip[i % len(steps_per_clip)] for i in range(args.batch_size)]
    tokens = torch.randn(args.batch_size, max(lengths), a.hidden_size, device=device, dtype=dtype)
    mask = torch.arange(max(lengths), device=device)[None] < torch.tensor(lengths, device=device)[:, None]
    with torch.no_grad():
        states = context(tokens)

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {args.dtype} on {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
             f" ({torch.get_num_threads()} threads)"))
    print(f"decoder: slap-base caption shapes, {sum(p.numel() for p in lm.parameters()) / 1e6:.1f}M parameters; "
          f"batch {args.batch_size}, clips of {args.seconds} s ({min(lengths)}-{max(lengths)} audio tokens)")
    print("| new tokens | old decoder (s) | old loop, GPT-2 (s) | generate (s) | vs old decoder | vs old loop "
          "| tokens equal |")
    print("|---|---|---|---|---|---|---|")
    all_equal = True
    for n in args.lengths:
        _, t_old = median_time(lambda n=n: old.generate(tokens, mask, n), device, args.repeats)
        ref, t_loop = median_time(lambda n=n: rerun_loop(lm, states, mask.long(), n), device, args.repeats)
        new, t_new = median_time(lambda n=n: generate_captions(lm, states, mask, BOS, EOS, PAD, n, min_new_tokens=n),
                                 device, args.repeats)
        equal = new.shape == ref.shape and bool((new == ref).all())
        agree = (new == ref).float().mean().item() if new.shape == ref.shape else 0.0
        all_equal &= equal
        print(f"| {n} | {t_old:.3f} | {t_loop:.3f} | {t_new:.3f} | {t_old / t_new:.2f}x | {t_loop / t_new:.2f}x "
              f"| {'yes' if equal else f'no ({agree:.1%} of tokens)'} |")
    if not all_equal:
        print("note: cached and re-run greedy tokens differ (rounding can flip near-ties in low precision)")


if __name__ == "__main__":
    main()
