"""SLAP's self-supervised objective: masked patch prediction against an EMA teacher (data2vec, BEATs-like).

The student (the audio tower being trained) sees a clip with spans of time steps hidden behind a mask
embedding; the teacher (an exponential moving average of the student, no gradients) sees the whole clip. At
the hidden patches the student regresses the teacher's average of its top ``k`` block outputs, each layer
normalised per token (data2vec, Baevski et al. 2022).

Why this objective: its targets are contextual features, not raw mel values (MAE-style reconstruction spends
capacity on noise detail) and need no separately trained tokenizer (BEATs iterates one); the teacher is the
same tower under a moving average, so it trains in the same single stage and step as the contrastive and
captioning losses; and it runs on the same variable-length, masked batches, since hiding patches is only a
per-token substitution.

The teacher itself is torch's `AveragedModel` with its EMA rule (`SLAP.teacher`, updated by `SLAP.ema_step`);
what is here is what that does not do: the span masks, the targets and the masked regression.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def span_mask(n_time: int, num_bands: int, prob: float, span: int, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """``(n_time, num_bands)`` boolean: each time step starts a hidden span of ``span`` steps with probability
    ``prob / span`` (about ``prob`` of the steps end up hidden, less where spans overlap); all bands of a hidden
    step are hidden, since neighbouring bands at one instant would give the answer away. At least one step is
    hidden and at least one kept."""
    starts = torch.rand(n_time, generator=generator) < prob / span
    hidden = F.pad(starts, (span - 1, 0)).unfold(0, span, 1).any(dim=-1)  # step t is in a span started at t-span+1..t
    if not hidden.any():
        hidden[torch.randint(n_time, (1,), generator=generator)] = True
    if hidden.all() and n_time > 1:
        hidden[torch.randint(n_time, (1,), generator=generator)] = False
    return hidden[:, None].expand(n_time, num_bands).to(device)


def teacher_targets(layers: list[torch.Tensor], top_k: int) -> torch.Tensor:
    """The mean of the last ``top_k`` block outputs, each layer-normalised per token (no affine)."""
    chosen = layers[-top_k:]
    return sum(F.layer_norm(x.float(), x.shape[-1:]) for x in chosen) / len(chosen)


def masked_regression(prediction: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the hidden positions (``hidden`` ``(clips, Lmax)``, padding False)."""
    error = (prediction.float() - target).pow(2).mean(dim=-1)
    return error[hidden].mean()

