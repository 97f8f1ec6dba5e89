"""Buffers our models compute themselves, recomputed here to check a checkpoint's stored copies before dropping
them: torchlibrosa's STFT kernels and the Swin transformer's relative-position index and shifted-window masks."""

from __future__ import annotations

import math

import torch


def hann_dft_kernels(n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """STFT as conv kernels ``(n_fft // 2 + 1, 1, n_fft)``: ``w[n] cos(2 pi k n / N)`` and ``-w[n] sin(...)``."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    phase = 2 * math.pi * torch.remainder(k[:, None] * n[None, :], n_fft) / n_fft
    return (torch.cos(phase) * window)[:, None, :], (-torch.sin(phase) * window)[:, None, :]


def swin_relative_position_index(window: int) -> torch.Tensor:
    """Index into the ``(2w-1)^2`` relative-position bias table for each pair of positions in a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


def swin_shift_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Shifted-window attention mask ``(windows, window^2, window^2)``: 0 within a region, -100 across regions."""
    def regions(size: int) -> torch.Tensor:
        idx = torch.arange(size)
        return (idx >= size - window).long() + (idx >= size - shift).long()

    label = regions(height)[:, None] * 3 + regions(width)[None, :]
    label = label.view(height // window, window, width // window, window).permute(0, 2, 1, 3).reshape(-1, window ** 2)
    differ = label[:, None, :] != label[:, :, None]
    return torch.zeros(differ.shape).masked_fill(differ, -100.0)
