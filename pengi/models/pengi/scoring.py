"""Turning generated text into scores: text-embedding similarity, and class likelihoods under the model.

Pengi answers every task in text, so a classification benchmark needs a rule that maps text to classes:

* **similarity** (what Pengi does): embed the generated text and every class name with the model's own text
  embedding and take the most similar class; a generation that equals a class name is that class.
* **likelihood**: score every class name as the answer to the prompt about the clip, the length-normalised
  log-probability of its tokens (teacher forcing, as in `Pengi.forward`), and rank the classes by it. It needs
  no generation and gives a score for every class, so it also ranks clips for mAP.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pengi.models.pengi.modeling_pengi import Pengi


@torch.inference_mode()
def text_embeddings(model: Pengi, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings ``(len(texts), d)`` in float32, from the model's own text embedding.

    With a prompt encoder this is `Pengi.embed_prompts`, the pooled ``(batch, d_proj)`` prompt embedding
    (texts beyond the prompt length limit are truncated, silently: the start of a long caption still
    describes it). A model without one embeds prompts with the LM's input token embeddings, which
    `embed_prompts` returns per token; they are mean-pooled over the text's own tokens. Those texts are
    tokenised here with the LM tokenizer without the prompt length limit, and without the release's
    ``" <|endoftext|>"`` suffix and "!" padding (which `compat="pengi-release"` puts on prompts), because
    padding would be averaged in. An empty text gets a zero vector: similarity 0 to every class.
    """
    proc = model._require_processor()
    texts = [t.strip() for t in texts]
    d = model.config.d_proj if model.prompt_encoder is not None else model.lm.get_input_embeddings().embedding_dim
    out = torch.zeros(len(texts), d)
    index = [i for i, t in enumerate(texts) if t]
    for start in range(0, len(index), batch_size):
        rows = index[start:start + batch_size]
        chunk = [texts[i] for i in rows]
        if model.prompt_encoder is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                emb = model.embed_prompts(chunk)
        else:
            enc = proc.tokenizer(chunk, padding=True, add_special_tokens=False, return_tensors="pt")
            mask = enc["attention_mask"].to(model.device).unsqueeze(-1)
            tokens = model.lm.get_input_embeddings()(enc["input_ids"].to(model.device))
            emb = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1)
        out[rows] = emb.float().cpu()
    return F.normalize(out, dim=-1)


def similarity_scores(model: Pengi, texts: Sequence[str], classes: Sequence[str]) -> torch.Tensor:
    """Cosine similarity of each text to each class name, ``(len(texts), len(classes))``."""
    return text_embeddings(model, texts) @ text_embeddings(model, classes).T


def map_to_classes(model: Pengi, texts: Sequence[str], classes: Sequence[str]) -> list[int]:
    """The class index of each generated text: an exact (case-insensitive) class name match, else the most
    similar class name; -1 for an empty text, which no class can claim."""
    scores = similarity_scores(model, texts, classes)
    lookup = {c.strip().lower(): i for i, c in enumerate(classes)}
    result = []
    for text, row in zip(texts, scores):
        key = text.strip().lower()
        result.append(lookup[key] if key in lookup else (int(row.argmax()) if key else -1))
    return result


def multilabel_similarity(model: Pengi, texts: Sequence[str], classes: Sequence[str],
                          separator: str = ",") -> torch.Tensor:
    """Per-class scores for multi-label clips: a generation lists labels ("dog, bark"), so each class takes its
    best cosine similarity over the generation's ``separator``-separated parts."""
    parts = [[p for p in t.split(separator) if p.strip()] or [""] for t in texts]
    flat = [p for ps in parts for p in ps]
    sims = similarity_scores(model, flat, classes)
    out, start = [], 0
    for ps in parts:
        out.append(sims[start:start + len(ps)].max(0).values)
        start += len(ps)
    return torch.stack(out) if out else torch.zeros(0, len(classes))


def answer_similarity(model: Pengi, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
    """For open-ended answers: each prediction's highest cosine similarity to any of its reference answers."""
    unique = sorted({t for t in predictions} | {r for refs in references for r in refs})
    emb = dict(zip(unique, text_embeddings(model, unique)))
    return [max(float(emb[p] @ emb[r]) for r in refs) for p, refs in zip(predictions, references)]


@torch.inference_mode()
def class_log_likelihoods_from_prefix(model: Pengi, prefix: torch.Tensor, classes: Sequence[str],
                                      batch_size: int = 128) -> torch.Tensor:
    """Length-normalised log-probability of each class name as the answer, ``(clips, classes)``.

    ``prefix`` is ``[audio prefix, text prefix]`` from `Pengi.prefix`. Each class is the answer tokens with the
    end-of-text token (as in training, so "dog" is scored as the whole answer, not as the start of "dog bark"),
    fed after the prefix with teacher forcing; its score is the mean log-probability of those tokens, which is
    minus `Pengi.forward`'s loss for that one (clip, class) pair. ``batch_size`` (clip, class) pairs go through
    the LM at a time; only the logits of answer positions are computed.
    """
    enc = model._require_processor().answers(list(classes))
    ids, mask = enc["input_ids"].to(prefix.device), enc["attention_mask"].to(prefix.device)
    embeds = model.lm.get_input_embeddings()(ids).to(prefix.dtype)
    n, p = prefix.shape[:2]
    c, t = ids.shape
    scores = torch.empty(n * c, dtype=torch.float32)
    for start in range(0, n * c, batch_size):
        pairs = torch.arange(start, min(start + batch_size, n * c), device=prefix.device)
        clip, cls = pairs // c, pairs % c
        inputs = torch.cat([prefix[clip], embeds[cls]], dim=1)
        full_mask = torch.cat([mask.new_ones(len(pairs), p), mask[cls]], dim=1)
        logits = model.lm(inputs_embeds=inputs, attention_mask=full_mask, logits_to_keep=t + 1).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[cls].unsqueeze(-1)).squeeze(-1)
        m = mask[cls].float()
        scores[start:start + len(pairs)] = ((logp * m).sum(1) / m.sum(1)).cpu()
    return scores.view(n, c)


@torch.inference_mode()
def class_log_likelihoods(model: Pengi, waveforms: torch.Tensor, prompts: Sequence[str], classes: Sequence[str],
                          batch_size: int = 128, waveform_lengths: torch.Tensor | None = None) -> torch.Tensor:
    """`class_log_likelihoods_from_prefix` for ``(clips, samples)`` waveforms (already fitted by the processor;
    right-padded with ``waveform_lengths`` for a variable-length tower) and one prompt per clip."""
    enc = model._require_processor().prompts(list(prompts))
    prefix = model.prefix(waveforms, waveform_lengths=waveform_lengths, **enc)
    return class_log_likelihoods_from_prefix(model, prefix, classes, batch_size)
