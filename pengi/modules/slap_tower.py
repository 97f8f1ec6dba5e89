"""SLAP's variable-duration audio tower: log-mel patches -> transformer with rotary time positions -> pooled.

A clip of any length up to ``max_seconds`` becomes ``n_time x n_bands`` patches (``patch_frames`` frames by
``patch_bins`` mel bins each), laid out time-major. There is no crop and no fixed input size:

* time positions are rotary (RoPE), so attention sees relative time and the tower runs on lengths it never
  trained on;
* the frequency band of a patch gets a learned embedding. The mel axis has a fixed size and is not
  translation invariant (a band at 4 kHz is always that band), so an absolute embedding is the right prior
  there; 2-D RoPE would only add relative frequency, which the mel scale does not make meaningful.

Batches are laid out by `pad_layout` (one clip per row, key-padding mask) or `pack_layout` (several clips per
row, block-diagonal mask, positions restarting at 0 for each clip). Either way each clip's tokens attend only
to each other and every per-token operation is independent of the others, so a clip's output is the same
alone, padded or packed (up to float rounding; `tests/test_slap.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pengi.modules.configuration_slap_tower import SlapAudioConfig
from pengi.modules.slap_layers import Block, rope_angles, segment_mask

MEL_FLOOR_DB = -100.0  # 10 * log10(amin) of the front end: what "silence" looks like; pads the last patch


def pool(x: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Masked mean (plus masked max for "mean_max") of ``x`` ``(..., L, d)`` over L; all-masked rows give 0."""
    weights = mask[..., None].to(x.dtype)
    out = (x * weights).sum(dim=-2) / weights.sum(dim=-2).clamp(min=1)
    if mode == "mean_max":
        peak = x.masked_fill(~mask[..., None], float("-inf")).amax(dim=-2)
        out = out + torch.where(mask.any(dim=-1, keepdim=True), peak, torch.zeros_like(peak))
    return out


@dataclass
class TokenBatch:
    """Patches laid out in rows for the transformer, and where each clip's tokens are.

    ``tokens`` ``(rows, L, patch_dim)``; ``time``/``band`` ``(rows, L)`` each token's patch coordinates;
    ``segment`` ``(rows, L)`` the clip a token belongs to within its row (-1: padding). ``index``
    ``(clips, Lmax)`` are flat indices into ``rows * L`` giving each clip's tokens in order (padded with 0),
    ``lengths`` ``(clips,)`` how many are real.
    """

    tokens: torch.Tensor
    time: torch.Tensor
    band: torch.Tensor
    segment: torch.Tensor
    index: torch.Tensor
    lengths: torch.Tensor

    def per_clip(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row-layout ``x`` ``(rows, L, ...)`` -> ``(clips, Lmax, ...)`` and its mask ``(clips, Lmax)``."""
        flat = x.reshape(-1, *x.shape[2:])[self.index]
        mask = torch.arange(self.index.shape[1], device=x.device)[None] < self.lengths[:, None]
        return flat, mask


def _layout(patches: list[torch.Tensor], placement: list[tuple[int, int]], rows: int, width: int,
            num_bands: int) -> TokenBatch:
    """Place clip ``i``'s patches ``(n_time, n_bands, patch_dim)`` in row ``placement[i][0]`` from column
    ``placement[i][1]``."""
    device, dim = patches[0].device, patches[0].shape[-1]
    tokens = patches[0].new_zeros(rows, width, dim)
    time = torch.zeros(rows, width, dtype=torch.long, device=device)
    band = torch.zeros(rows, width, dtype=torch.long, device=device)
    segment = torch.full((rows, width), -1, dtype=torch.long, device=device)
    lengths = [p.shape[0] * p.shape[1] for p in patches]
    index = torch.zeros(len(patches), max(lengths), dtype=torch.long, device=device)
    for i, (p, (row, start)) in enumerate(zip(patches, placement)):
        n = lengths[i]
        span = slice(start, start + n)
        tokens[row, span] = p.reshape(n, dim)
        time[row, span] = torch.arange(p.shape[0], device=device).repeat_interleave(num_bands)
        band[row, span] = torch.arange(num_bands, device=device).repeat(p.shape[0])
        segment[row, span] = i
        index[i, :n] = row * width + torch.arange(start, start + n, device=device)
    return TokenBatch(tokens, time, band, segment, index, torch.tensor(lengths, device=device))


def pad_layout(patches: list[torch.Tensor], num_bands: int) -> TokenBatch:
    """One clip per row, right-padded to the longest clip."""
    width = max(p.shape[0] * p.shape[1] for p in patches)
    return _layout(patches, [(i, 0) for i in range(len(patches))], len(patches), width, num_bands)


def pack_rows(lengths: list[int], capacity: int) -> list[tuple[int, int]]:
    """First-fit decreasing: ``(row, start)`` for each length, rows holding at most ``capacity`` tokens."""
    if max(lengths) > capacity:
        raise ValueError(f"a clip of {max(lengths)} tokens does not fit in rows of {capacity}")
    fill: list[int] = []
    placement: list[tuple[int, int]] = [(0, 0)] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, used in enumerate(fill) if used + lengths[i] <= capacity), len(fill))
        if row == len(fill):
            fill.append(0)
        placement[i] = (row, fill[row])
        fill[row] += lengths[i]
    return placement


def pack_layout(patches: list[torch.Tensor], num_bands: int, capacity: int | None = None) -> TokenBatch:
    """Several clips per row (first-fit decreasing into rows of ``capacity`` tokens, default the longest clip)."""
    lengths = [p.shape[0] * p.shape[1] for p in patches]
    capacity = capacity or max(lengths)
    placement = pack_rows(lengths, capacity)
    rows = 1 + max(r for r, _ in placement)
    width = max(start + n for (_, start), n in zip(placement, lengths))
    return _layout(patches, placement, rows, width, num_bands)


@dataclass
class SlapAudioOutput:
    """Per clip: ``pooled`` ``(clips, hidden)``, ``hidden`` ``(clips, Lmax, hidden)`` time-major tokens with
    ``mask`` ``(clips, Lmax)``, and with ``output_layers`` every block's output in the same layout."""

    pooled: torch.Tensor
    hidden: torch.Tensor
    mask: torch.Tensor
    num_bands: int
    pooling: str
    layers: list[torch.Tensor] | None = None

    def frames(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each time step's band tokens pooled as clips are: ``(clips, Tmax, hidden)`` and the frame mask
        ``(clips, Tmax)``."""
        n, length, d = self.hidden.shape
        steps = length // self.num_bands
        frames = pool(self.hidden.view(n, steps, self.num_bands, d), self.mask.view(n, steps, self.num_bands),
                      self.pooling)
        return frames, self.mask[:, ::self.num_bands]


class SlapAudioModel(nn.Module):
    """Log-mel images of any lengths -> per-clip tokens and masked-mean pooled embeddings."""

    def __init__(self, config: SlapAudioConfig):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.patch_embed = nn.Linear(config.patch_frames * config.patch_bins, d)
        self.band_embed = nn.Embedding(config.num_bands, d)
        self.mask_embed = nn.Parameter(torch.zeros(d))  # replaces the patches hidden from the SSL student
        self.blocks = nn.ModuleList(Block(d, config.num_heads, config.mlp_ratio, config.dropout)
                                    for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(d)
        self.num_features = d

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.weight.dtype

    def patchify(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(frames, n_mels)`` in dB -> normalised patches ``(n_time, n_bands, patch_frames * patch_bins)``;
        the last partial patch is filled with silence (the front end's floor)."""
        c = self.config
        n_time = -(-mel.shape[0] // c.patch_frames)
        filler = mel.new_full((n_time * c.patch_frames - mel.shape[0], mel.shape[1]), MEL_FLOOR_DB)
        x = (torch.cat([mel, filler]) - c.mel_mean) / c.mel_std
        x = x.view(n_time, c.patch_frames, c.num_bands, c.patch_bins).transpose(1, 2)
        return x.reshape(n_time, c.num_bands, -1)

    def layout(self, mels: list[torch.Tensor], pack: bool = False, capacity: int | None = None) -> TokenBatch:
        patches, bands = [self.patchify(m) for m in mels], self.config.num_bands
        return pack_layout(patches, bands, capacity) if pack else pad_layout(patches, bands)

    def forward(self, mels: list[torch.Tensor], pack: bool = False, capacity: int | None = None,
                hide: list[torch.Tensor] | None = None, output_layers: bool = False) -> SlapAudioOutput:
        """``mels``: one log-mel ``(frames, n_mels)`` per clip. ``hide``: per clip, a boolean ``(n_time, n_bands)``
        of patches replaced by the mask embedding (the SSL student's view). ``pack``: several clips per row."""
        batch = self.layout(mels, pack, capacity)
        x = self.patch_embed(batch.tokens.to(self.dtype))
        if hide is not None:
            hidden_flat = torch.zeros(batch.tokens.shape[:2], dtype=torch.bool, device=x.device).view(-1)
            for i, h in enumerate(hide):
                hidden_flat[batch.index[i, :h.numel()]] = h.reshape(-1).to(x.device)
            x = torch.where(hidden_flat.view(x.shape[:2])[..., None], self.mask_embed.to(x.dtype), x)
        x = x + self.band_embed(batch.band)
        mask = segment_mask(batch.segment)
        rope = rope_angles(batch.time, self.config.hidden_size // self.config.num_heads, self.config.rope_theta)
        layers = []
        for block in self.blocks:
            x = block(x, mask, rope)
            if output_layers:
                layers.append(batch.per_clip(x)[0])
        hidden, clip_mask = batch.per_clip(self.norm(x))
        pooled = pool(hidden, clip_mask, self.config.pooling)
        return SlapAudioOutput(pooled, hidden, clip_mask, self.config.num_bands, self.config.pooling,
                               layers if output_layers else None)


__all__ = ["SlapAudioConfig", "SlapAudioModel", "SlapAudioOutput", "TokenBatch", "pack_layout", "pack_rows",
           "pad_layout"]
