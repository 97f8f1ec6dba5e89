"""The SLAP model: variable-duration audio, trained in one stage with three objectives.

    audio (any length <= max_seconds) -> log-mel -> patches -> RoPE transformer (pengi.modules.slap_tower)
        pooled  -> projection -> InfoNCE with text (TextEncoder)         contrastive_weight
        tokens  -> GPT-2 caption decoder (cross-attention) -> caption CE caption_weight
    hidden-span view of the same clip -> student tokens -> regress the
        EMA teacher's layer-averaged tokens at hidden patches            ssl_weight
    (the teacher: torch.optim.swa_utils.AveragedModel of the student tower, EMA after each optimiser step)

`frames(audio)` gives embeddings in the joint space for each time step (0.16 s by default), and
`text_to_frames` / `locate` score a text against them, to find when a described sound happens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from transformers import GPT2LMHeadModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from pengi.audio import AudioSource, describe_source
from pengi.errors import PengiInputError
from pengi.models.contrastive import ContrastiveMixin
from pengi.models.pretrained import WithProcessor, as_list
from pengi.models.slap.configuration_slap import SLAPConfig
from pengi.models.slap.decoder import caption_context, caption_decoder, caption_loss, generate_captions, until_end
from pengi.models.slap.legacy_layout import OLD_DECODER, legacy_key_mapping
from pengi.models.slap.processing_slap import SLAPProcessor
from pengi.models.slap.ssl import masked_regression, span_mask, teacher_targets
from pengi.modules.contrastive import contrastive_loss, initial_logit_scale
from pengi.modules.encoders import AudioEncoder, TextEncoder
from pengi.modules.slap_tower import SlapAudioModel, SlapAudioOutput


@dataclass
class SLAPOutput(ModelOutput):
    """``loss`` is the weighted sum of ``losses`` (only the objectives with a weight > 0 are computed)."""

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    logits_per_audio: torch.Tensor | None = None
    audio_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None


@dataclass
class FrameScores:
    """One clip's text-to-frame similarity: ``times`` ``(T,)`` (seconds, the centre of each time step) and
    ``similarity`` ``(T, n_texts)`` (cosine)."""

    times: torch.Tensor
    similarity: torch.Tensor


class SLAP(ContrastiveMixin, WithProcessor, PreTrainedModel):
    """`embed_audio`, `embed_text`, `frames`, `text_to_frames`, `locate`, `caption`, and `forward` for training."""

    config_class = SLAPConfig
    config: SLAPConfig
    processor_class = SLAPProcessor
    base_model_prefix = "slap"
    main_input_name = "waveforms"
    input_modalities = ("audio", "text")
    _supports_sdpa = True
    # Old layouts (`legacy_layout`): no teacher update count (it starts at 1, `_init_weights`); the old decoder's
    # weights are dropped without a report when the model is loaded without a decoder (caption_weight=0).
    _keys_to_ignore_on_load_missing = [r"^teacher\.n_averaged$"]
    _keys_to_ignore_on_load_unexpected = [OLD_DECODER.pattern]

    def __init__(self, config: SLAPConfig):
        super().__init__(config)
        self.audio_encoder = AudioEncoder(config)
        self.text_encoder = TextEncoder(config.text_config, config.text_pooling, config.text_projection,
                                        config.d_proj, config.projection_dropout, config.projection)
        self.logit_scale = nn.Parameter(torch.tensor(initial_logit_scale(config.temperature)))
        width = config.audio_config.hidden_size
        self.teacher: AveragedModel | None = None
        self.ssl_head: nn.Linear | None = None
        if config.ssl_weight > 0:
            # The tower has no buffers today; use_buffers averages any it gets (as a teacher should) instead of
            # copying the student's.
            self.teacher = AveragedModel(self.audio_encoder.base, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay),
                                         use_buffers=True).requires_grad_(False)
            self.ssl_head = nn.Linear(width, width)
        self.decoder: GPT2LMHeadModel | None = None
        self.caption_context: nn.Module | None = None
        if config.caption_weight > 0:
            self.decoder = caption_decoder(config)
            self.caption_context = caption_context(config)
        self.processor: SLAPProcessor | None = None
        self._text_cache: dict[str, torch.Tensor] = {}
        self.post_init()
        self.reset_teacher()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # the temperature: ContrastiveMixin
        if isinstance(module, AveragedModel):  # a teacher holds an average from the start (`reset_teacher`)
            init.constant_(module.n_averaged, 1)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> SLAP:
        """transformers' loading; a folder saved before the teacher was an `AveragedModel` has its teacher keys
        renamed (`pengi.models.slap.legacy_layout`), one whose caption decoder predates GPT-2 is refused."""
        caption_weight = kwargs.get("caption_weight", getattr(kwargs.get("config"), "caption_weight", None))
        mapping = legacy_key_mapping(pretrained_model_name_or_path, caption_weight)
        if mapping and "key_mapping" not in kwargs:
            kwargs["key_mapping"] = mapping
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """transformers' saving, always in today's layout (by default it writes a model loaded through a key
        mapping back in the layout it came from)."""
        kwargs.setdefault("save_original_format", False)
        super().save_pretrained(save_directory, *args, **kwargs)

    def apply_freezing(self) -> None:
        if self.teacher is not None:
            self.teacher.requires_grad_(False)

    def train(self, mode: bool = True) -> SLAP:
        """The EMA teacher stays in eval mode (its targets never see dropout)."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def reset_teacher(self) -> None:
        """Make the EMA teacher a copy of the student tower, as `AveragedModel`'s first update does; its count
        starts at 1, so the next `ema_step` averages."""
        if self.teacher is not None:
            self.teacher.module.load_state_dict(self.tower.state_dict())
            self.teacher.n_averaged.fill_(1)

    @torch.no_grad()
    def ema_step(self) -> None:
        """``teacher = ema_decay * teacher + (1 - ema_decay) * student``; call after each optimiser step."""
        if self.teacher is not None:
            self.teacher.update_parameters(self.tower)

    @property
    def tower(self) -> SlapAudioModel:
        return self.audio_encoder.base

    # ------------------------------------------------------------------ tensors in, tensors out
    def encode_audio(self, waveforms: torch.Tensor, waveform_lengths: torch.Tensor | None = None,
                     pack: bool = False) -> SlapAudioOutput:
        """The tower's per-clip tokens and pooled features (before projection)."""
        return self.tower(self.audio_encoder.mels(waveforms.to(self.device), waveform_lengths), pack=pack)

    def audio_embedding(self, waveforms: torch.Tensor, waveform_lengths: torch.Tensor | None = None,
                        pack: bool = False) -> torch.Tensor:
        """L2-normalised clip embeddings ``(batch, d_proj)``."""
        pooled = self.encode_audio(waveforms, waveform_lengths, pack).pooled
        return F.normalize(self.audio_encoder.projection(pooled), dim=-1)

    def ssl_loss(self, mels: list[torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Masked patch prediction: the student sees hidden spans, regresses the teacher's targets there."""
        c, tower = self.config, self.tower
        hide = [span_mask(-(-m.shape[0] // c.audio_config.patch_frames), c.audio_config.num_bands,
                          c.ssl_mask_prob, c.ssl_mask_span, generator, self.device) for m in mels]
        with torch.no_grad():
            targets = teacher_targets(self.teacher(mels, output_layers=True).layers, c.ssl_target_layers)
        student = tower(mels, hide=hide)
        hidden = torch.zeros_like(student.mask)
        for i, h in enumerate(hide):
            hidden[i, :h.numel()] = h.reshape(-1)
        return masked_regression(self.ssl_head(student.hidden), targets, hidden)

    def forward(self, waveforms: torch.Tensor, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, caption_ids: torch.Tensor | None = None,
                caption_mask: torch.Tensor | None = None, waveform_lengths: torch.Tensor | None = None,
                pack: bool = False, return_loss: bool | None = None, **kwargs: Any) -> SLAPOutput:
        """The weighted sum of the objectives whose weight is > 0; row ``i`` of audio and texts is a pair.

        ``return_loss``: None (the default) computes the losses for a training batch, whose texts pair with the
        clips (and come with ``caption_ids`` when the caption objective is on); for anything else, such as the one
        clip and label texts of transformers' zero-shot-audio-classification pipeline, only the embeddings and
        logits. ``pack`` lays several clips per row (block-diagonal attention) instead of one padded clip per row.
        """
        c = self.config
        training_batch = self._is_training_batch(waveforms, input_ids, caption_ids)
        if return_loss and not training_batch:
            raise ValueError("return_loss needs a training batch: as many texts (and, with caption_weight > 0, "
                             "caption_ids) as clips")
        if not (training_batch if return_loss is None else return_loss):
            audio = self.audio_embedding(waveforms, waveform_lengths, pack)
            text = logits = None
            if input_ids is not None:
                text = self.text_embedding(input_ids, attention_mask)
                logits = self.logits(audio, text)
            return SLAPOutput(logits_per_audio=logits, audio_embeds=audio, text_embeds=text)
        mels = self.audio_encoder.mels(waveforms.to(self.device), waveform_lengths)
        losses: dict[str, torch.Tensor] = {}
        audio = text = logits = clean = None
        if c.contrastive_weight > 0 or c.caption_weight > 0:
            clean = self.tower(mels, pack=pack)
        if c.contrastive_weight > 0:
            audio = F.normalize(self.audio_encoder.projection(clean.pooled), dim=-1)
            text = self.text_embedding(input_ids, attention_mask)
            logits = self.logits(audio, text)
            losses["contrastive"] = contrastive_loss(audio, text, self.logit_scale, c.max_logit_scale)
        if c.ssl_weight > 0:
            losses["ssl"] = self.ssl_loss(mels)
        if c.caption_weight > 0:
            losses["caption"] = caption_loss(self.decoder, caption_ids.to(self.device), caption_mask.to(self.device),
                                             self.caption_context(clean.hidden), clean.mask)
        weights = {"contrastive": c.contrastive_weight, "ssl": c.ssl_weight, "caption": c.caption_weight}
        loss = sum(weights[k] * v for k, v in losses.items()) if losses else None
        return SLAPOutput(loss=loss, losses=losses, logits_per_audio=logits, audio_embeds=audio, text_embeds=text)

    def _is_training_batch(self, waveforms: torch.Tensor, input_ids: torch.Tensor | None,
                           caption_ids: torch.Tensor | None) -> bool:
        c, n = self.config, waveforms.shape[0]
        texts_pair = input_ids is not None and input_ids.shape[0] == n
        captions_pair = caption_ids is not None and caption_ids.shape[0] == n
        return (c.contrastive_weight == 0 or texts_pair) and (c.caption_weight == 0 or captions_pair)

    # ------------------------------------------------------------------ user inputs in
    def _audio(self, audio: AudioSource | Sequence[AudioSource]) -> dict[str, torch.Tensor]:
        proc = self._require_processor()
        sources = as_list(audio)
        if not sources:
            raise PengiInputError("audio", "no audio inputs given")
        return proc.batch([proc.clip(proc.load(s, describe_source(s, i))) for i, s in enumerate(sources)])

    @torch.inference_mode()
    def embed_audio(self, audio: AudioSource | Sequence[AudioSource], batch_size: int = 32,
                    pack: bool = False) -> torch.Tensor:
        """L2-normalised clip embeddings ``(n, d_proj)``; each clip whole, up to ``max_seconds``, ``batch_size``
        clips at a time (``pack``: several clips per row)."""
        sources = as_list(audio)
        if not sources:
            raise PengiInputError("audio", "no audio inputs given")
        return torch.cat([self.audio_embedding(**self._audio(sources[i:i + batch_size]), pack=pack)
                          for i in range(0, len(sources), batch_size)])

    @torch.inference_mode()
    def frames(self, audio: AudioSource | Sequence[AudioSource]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per clip: the centre time of each time step in seconds ``(T,)`` and its L2-normalised embedding in
        the joint space ``(T, d_proj)``.

        A time step's feature is its band tokens pooled as a clip's tokens are (`SlapAudioConfig.pooling`),
        projected like the pooled feature; with ``pooling="mean"`` the mean of a clip's frame features is exactly
        its pooled feature.
        """
        batch = self._audio(audio)
        out = self.encode_audio(**batch)
        feats, mask = out.frames()
        embeds = F.normalize(self.audio_encoder.projection(feats), dim=-1)
        step = self.config.seconds_per_frame
        half_frame = (self.config.audio_config.patch_frames - 1) / 2 * self.config.hop_length / self.config.sample_rate
        result = []
        for e, m in zip(embeds, mask):
            n = int(m.sum())
            result.append((torch.arange(n, device=e.device) * step + half_frame, e[:n]))
        return result

    def text_to_frames(self, audio: AudioSource | Sequence[AudioSource],
                       texts: str | Sequence[str]) -> list[FrameScores]:
        """Per clip, the cosine similarity of each text with each time step: when does each sound happen."""
        text = self.embed_text(texts)
        return [FrameScores(times, frames @ text.T) for times, frames in self.frames(audio)]

    def locate(self, audio: AudioSource, text: str, threshold: float | None = None) -> list[dict[str, float]]:
        """Time spans of one recording where ``text``'s similarity is at least ``threshold`` (default: halfway
        between the clip's lowest and highest score): ``[{"start": s, "end": e, "score": peak}, ...]``."""
        scores = self.text_to_frames(audio, text)[0]
        sim = scores.similarity[:, 0]
        if threshold is None:
            threshold = float(sim.min() + sim.max()) / 2
        step = self.config.seconds_per_frame
        spans: list[dict[str, float]] = []
        for i, above in enumerate((sim >= threshold).tolist()):
            if not above:
                continue
            if spans and abs(spans[-1]["end"] - i * step) < 1e-9:
                spans[-1]["end"] = (i + 1) * step
                spans[-1]["score"] = max(spans[-1]["score"], float(sim[i]))
            else:
                spans.append({"start": i * step, "end": (i + 1) * step, "score": float(sim[i])})
        return spans

    @torch.inference_mode()
    def caption(self, audio: AudioSource | Sequence[AudioSource], max_length: int | None = None,
                **generate_kwargs: Any) -> list[Any]:
        """One caption per clip from the caption decoder (models trained with ``caption_weight > 0``), all clips
        in one batch: greedy by default, else as the decoder's `generate` arguments say (``num_beams``,
        ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``num_return_sequences``: then a list per clip).
        ``max_length``: new tokens at most (default and limit: ``caption_max_length``, the decoder's positions).
        """
        if self.decoder is None:
            raise RuntimeError("this model has no caption decoder (caption_weight was 0)")
        limit = self.decoder.config.n_positions
        max_length = limit if max_length is None else max_length
        if not 1 <= max_length <= limit:
            raise PengiInputError("max_length", f"must be in 1..{limit} (the caption decoder has {limit} positions: "
                                                f"caption_max_length), got {max_length}")
        if "max_new_tokens" in generate_kwargs:
            raise PengiInputError("max_new_tokens", "give the caption length as max_length")
        proc = self._require_processor()
        out = self.encode_audio(**self._audio(audio))
        ids = generate_captions(self.decoder, self.caption_context(out.hidden), out.mask, proc.bos_id, proc.eos_id,
                                proc.tokenizer.pad_token_id, max_length, **generate_kwargs)
        texts = proc.decode(until_end(ids, proc.eos_id))
        per_clip = generate_kwargs.get("num_return_sequences", 1)
        return texts if per_clip == 1 else [texts[i:i + per_clip] for i in range(0, len(texts), per_clip)]

__all__ = ["SLAP", "SLAPOutput", "FrameScores"]
