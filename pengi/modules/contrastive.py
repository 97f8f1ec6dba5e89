"""The symmetric contrastive (InfoNCE) loss of CLAP, with the batch spanning every process.

In a multi-process run each process gathers all processes' embeddings (with gradients flowing back through
`torch.distributed.nn.all_gather`) and scores its own rows against every column, so each clip competes
with the whole global batch, as in CLIP and open_clip.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from pengi.modules.configuration_encoders import CLAP_TEMPERATURE, MAX_LOGIT_SCALE


def initial_logit_scale(temperature: float = CLAP_TEMPERATURE) -> float:
    return math.log(1.0 / temperature)


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All processes' rows of ``x`` concatenated (gradients reach every process's own rows), and this rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    import torch.distributed.nn  # noqa: F401  (registers the autograd-aware collectives)

    return torch.cat(torch.distributed.nn.all_gather(x), dim=0), dist.get_rank()


def contrastive_logits(audio: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                       max_scale: float = MAX_LOGIT_SCALE) -> torch.Tensor:
    """``exp(logit_scale)`` (clamped at ``max_scale``) times the cosine similarity of every audio-text pair."""
    scale = logit_scale.exp().clamp(max=max_scale)
    return scale * F.normalize(audio, dim=-1) @ F.normalize(text, dim=-1).T


def contrastive_loss(audio: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                     max_scale: float = MAX_LOGIT_SCALE, gather: bool = True) -> torch.Tensor:
    """Mean of the audio->text and text->audio cross-entropies; row ``i`` of each side is a positive pair.

    With ``gather`` in a multi-process run the negatives come from every process's batch.
    """
    n = audio.shape[0]
    if gather:
        all_audio, rank = gather_with_grad(audio)
        all_text, _ = gather_with_grad(text)
    else:
        all_audio, all_text, rank = audio, text, 0
    targets = torch.arange(n, device=audio.device) + rank * n
    per_audio = contrastive_logits(audio, all_text, logit_scale, max_scale)
    per_text = contrastive_logits(text, all_audio, logit_scale, max_scale)
    return (F.cross_entropy(per_audio.float(), targets) + F.cross_entropy(per_text.float(), targets)) / 2
