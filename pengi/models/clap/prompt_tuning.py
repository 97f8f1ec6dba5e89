"""Audio-free prompt tuning of a frozen CLAP (after Li et al., arXiv 2309.08357).

CLAP puts audio and text in one space, so a classifier over that space can be trained on *text* embeddings and
then applied to *audio* embeddings. Only a few prompt vectors learn; CLAP stays frozen; no audio is needed.

Two granularities, added at inference (the paper's multi-grained design):

* global: learned context vectors replace the template's words in the text encoder's input,
  ``[CLS] v_1 ... v_n <label tokens> [SEP]``; each label's pooled embedding is a class prototype, scored
  against the input's pooled embedding.
* local: a second set of context vectors gives a second prototype per label, which attends over the input's
  token-level features in the joint space (text tokens when training, audio frames at inference) and is scored
  against that attention-pooled feature.

The context is shared by all labels (as in CoOp), so tuned prompts apply to labels never seen in training.
Both sets start as the embedding of the zero-shot template, so tuning starts from vanilla zero-shot.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import trange

from pengi.audio import AudioSource, describe_source
from pengi.errors import PengiInputError
from pengi.models.clap.modeling_clap import CLAP
from pengi.models.pretrained import as_list

PROMPT_FILE = "prompts.safetensors"
PROMPT_CONFIG = "prompt_config.json"


class PromptTuner(nn.Module):
    """Learned prompts for a frozen `CLAP`: `fit` on texts, then `classify` audio (any labels)."""

    def __init__(self, clap: CLAP, init_template: str = "This is a sound of", local: bool = True):
        super().__init__()
        self.__dict__["clap"] = clap.eval().requires_grad_(False)  # held, not registered: its weights stay frozen
        self.init_template, self.local = init_template, local
        if local and not clap.audio_encoder.has_frames:
            raise ValueError("local prompts need frame features: an HTSAT CLAP with audio_time_segments 1 "
                             "(use local=False for global prompts only)")
        tok = clap._require_processor().tokenizer
        self._prefix = [tok.cls_token_id] if tok.cls_token_id is not None else []
        self._suffix = [tok.sep_token_id] if tok.sep_token_id is not None else []
        ids = tok(init_template, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            init = self._word_embeddings(torch.tensor(ids, device=clap.device)).float()
        self.global_context = nn.Parameter(init.clone())
        self.local_context = nn.Parameter(init.clone()) if local else None

    # ----------------------------------------------------------------------------- pieces
    def _word_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        return self.clap.text_encoder.base.get_input_embeddings()(ids)

    def prototypes(self, labels: Sequence[str], context: torch.Tensor) -> torch.Tensor:
        """One L2-normalised embedding per label: the frozen text encoder over ``[prefix, context, label, suffix]``."""
        tok = self.clap.processor.tokenizer
        device = self.clap.device
        rows = [tok(" " + label.strip(), add_special_tokens=False)["input_ids"] for label in labels]
        width = max(len(r) for r in rows)
        embeds, masks = [], []
        for r in rows:
            ids = torch.tensor(self._prefix + r + self._suffix, device=device)
            words = self._word_embeddings(ids)
            n = len(self._prefix)
            seq = torch.cat([words[:n], context.to(words.dtype), words[n:]])
            pad = width - len(r)
            embeds.append(F.pad(seq, (0, 0, 0, pad)))
            masks.append(torch.cat([torch.ones(len(seq), device=device), torch.zeros(pad, device=device)]))
        out = self.clap.text_encoder.from_embeddings(torch.stack(embeds), torch.stack(masks).long())
        return F.normalize(out, dim=-1)

    def _scale(self) -> torch.Tensor:
        return self.clap.logit_scale.exp().clamp(max=self.clap.config.max_logit_scale)

    def logits(self, embeds: torch.Tensor, tokens: torch.Tensor | None, token_mask: torch.Tensor | None,
               labels: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Global and local logits ``(n, n_labels)`` of inputs given by their pooled embeddings ``embeds`` and
        token-level features ``tokens`` ``(n, t, d)`` (both in the joint space)."""
        scale = self._scale()
        global_logits = scale * F.normalize(embeds, dim=-1) @ self.prototypes(labels, self.global_context).T
        if self.local_context is None or tokens is None:
            return global_logits, None
        local = self.prototypes(labels, self.local_context)  # (labels, d)
        tokens = F.normalize(tokens, dim=-1)
        attention = scale * torch.einsum("ntd,cd->nct", tokens, local)
        if token_mask is not None:
            attention = attention.masked_fill(~token_mask.bool()[:, None, :], float("-inf"))
        pooled = torch.einsum("nct,ntd->ncd", attention.softmax(dim=-1), tokens)
        local_logits = scale * torch.einsum("ncd,cd->nc", F.normalize(pooled, dim=-1), local)
        return global_logits, local_logits

    # ----------------------------------------------------------------------------- training, from text only
    def text_inputs(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The frozen CLAP's pooled embeddings, token features and token mask of training texts."""
        proc = self.clap.processor
        enc = {k: v.to(self.clap.device) for k, v in proc.texts(list(texts)).items()}
        with torch.no_grad():
            pooled = self.clap.text_encoder(**enc)
            tokens = self.clap.text_encoder.token_features(**enc) if self.local else None
        return pooled, tokens, enc["attention_mask"]

    def fit(self, texts: Sequence[str], targets: Sequence[int], labels: Sequence[str], epochs: int = 30,
            lr: float = 2e-3, batch_size: int = 64, seed: int = 0, quiet: bool = False) -> list[float]:
        """Tune the prompts so that each text is classified as ``labels[targets[i]]``; returns the loss per epoch.

        Texts are captions or other descriptions of the labels' sounds, or the label names alone.
        """
        if len(texts) != len(targets) or not texts:
            raise ValueError(f"need one target per text, got {len(texts)} texts and {len(targets)} targets")
        pooled, tokens, mask = self.text_inputs(texts)
        y = torch.tensor(list(targets), device=self.clap.device)
        optimizer = torch.optim.AdamW([p for p in self.parameters()], lr=lr, weight_decay=0.0)
        generator = torch.Generator().manual_seed(seed)
        history = []
        for _ in trange(epochs, desc="prompt tuning", disable=quiet):
            order = torch.randperm(len(y), generator=generator)
            total = 0.0
            for start in range(0, len(y), batch_size):
                idx = order[start:start + batch_size].to(y.device)
                g, loc = self.logits(pooled[idx], None if tokens is None else tokens[idx], mask[idx], labels)
                loss = F.cross_entropy(g, y[idx]) + (F.cross_entropy(loc, y[idx]) if loc is not None else 0.0)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
            history.append(total / len(y))
        return history

    # ----------------------------------------------------------------------------- inference, on audio
    @torch.no_grad()
    def classify(self, audio: AudioSource | Sequence[AudioSource], labels: Sequence[str],
                 batch_size: int = 32) -> torch.Tensor:
        """Class probabilities ``(n_audio, n_labels)``: softmax of the global plus the local logits."""
        labels = list(labels)
        if not labels:
            raise PengiInputError("labels", "no class labels given")
        proc = self.clap._require_processor()
        sources = as_list(audio)
        out = []
        for start in range(0, len(sources), batch_size):
            chunk = sources[start:start + batch_size]
            waves = torch.stack([proc.clip(proc.load(s, describe_source(s, start + i)))
                                 for i, s in enumerate(chunk)]).to(self.clap.device)
            embeds = self.clap.audio_encoder(waves)
            frames = self.clap.audio_encoder.frame_features(waves) if self.local else None
            g, loc = self.logits(embeds, frames, None, labels)
            out.append((g if loc is None else g + loc).softmax(dim=-1))
        return torch.cat(out)

    # ----------------------------------------------------------------------------- saving
    def save(self, folder: str | os.PathLike) -> None:
        """Write the prompts (safetensors) and their settings; the CLAP model is not copied."""
        os.makedirs(folder, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  os.path.join(folder, PROMPT_FILE))
        with open(os.path.join(folder, PROMPT_CONFIG), "w") as f:
            json.dump({"init_template": self.init_template, "local": self.local}, f, indent=2)

    @classmethod
    def load(cls, folder: str | os.PathLike, clap: CLAP) -> PromptTuner:
        """Prompts saved by `save`, for the same CLAP model they were tuned on."""
        with open(os.path.join(folder, PROMPT_CONFIG)) as f:
            settings = json.load(f)
        tuner = cls(clap, settings["init_template"], settings["local"])
        state = load_file(os.path.join(folder, PROMPT_FILE))
        if state["global_context"].shape[-1] != tuner.global_context.shape[-1]:
            raise ValueError(f"{folder}: prompts of width {state['global_context'].shape[-1]} do not fit this CLAP "
                             f"(token width {tuner.global_context.shape[-1]})")
        tuner.global_context = nn.Parameter(state["global_context"].to(clap.device))
        if tuner.local_context is not None:
            tuner.local_context = nn.Parameter(state["local_context"].to(clap.device))
        return tuner

