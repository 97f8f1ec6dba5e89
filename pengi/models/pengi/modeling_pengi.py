"""The Pengi model: audio and prompt become a prefix of LM embeddings, and every task is text generation.

    audio  -> AudioEncoder  -> L2 norm -> audio mapper -> audio prefix (audio_prefix_length x d_lm)
    prompt -> TextEncoder  -> L2 norm -> text mapper  -> text prefix  (text_prefix_length x d_lm)
           (or, with no prompt encoder: LM token embeddings -> token-level text mapper)
    LM(inputs_embeds=[audio prefix, text prefix, answer tokens]) -> answer

Both prefixes have a fixed length, so a batch of prompts of any lengths needs no padding in front of the
LM and generates exactly what each input generates alone.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from pengi.audio import AudioSource, describe_source
from pengi.data.tasks import DESCRIBE_PROMPTS, TASK_PROMPTS
from pengi.errors import PengiInputError
from pengi.models.pengi.configuration_pengi import PengiConfig
from pengi.models.pengi.processing_pengi import PengiProcessor
from pengi.models.pretrained import WithProcessor, as_list
from pengi.modules.encoders import AudioEncoder, TextEncoder
from pengi.modules.mapper import TransformerMapper

DEFAULT_MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "default_model")
DEFAULT_PROMPT = TASK_PROMPTS["caption"]


class Pengi(WithProcessor, PreTrainedModel):
    """Audio-language model: `generate(audio, prompt)` answers a prompt about each clip in text."""

    config_class = PengiConfig
    config: PengiConfig
    processor_class = PengiProcessor
    base_model_prefix = "pengi"
    main_input_name = "waveforms"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: PengiConfig):
        super().__init__(config)
        self.audio_encoder = AudioEncoder(config)
        self.prompt_encoder = None
        if config.prompt_encoder_config is not None:
            self.prompt_encoder = TextEncoder(config.prompt_encoder_config, config.prompt_pooling,
                                              config.prompt_text_projection, config.d_proj, config.projection_dropout)
        self.lm = AutoModelForCausalLM.from_config(config.lm_config)
        if getattr(self.lm, "loss_type", None) is None:  # e.g. GPT2LMHeadModel: its name does not say "ForCausalLM"
            self.lm.loss_type = "ForCausalLM"
        d_lm = config.lm_config.hidden_size
        mapper = dict(dim=d_lm, num_layers=config.mapper_layers, num_heads=config.mapper_heads,
                      mlp_ratio=config.mapper_mlp_ratio, dropout=config.mapper_dropout)
        self.audio_mapper = TransformerMapper(config.d_proj, prefix_length=config.audio_prefix_length, **mapper)
        text_in = config.d_proj if self.prompt_encoder is not None else None
        self.text_mapper = None  # no prompt is read (clapcap)
        if config.text_prefix_length > 0:
            self.text_mapper = TransformerMapper(text_in, prefix_length=config.text_prefix_length, **mapper)
        self.processor: PengiProcessor | None = None
        self.post_init()
        self.apply_freezing()

    def apply_freezing(self) -> None:
        """Freeze what the config says: the LM, and the encoders' backbones (their projections always train)."""
        parts = {"lm": self.lm, "audio_encoder": self.audio_encoder.base,
                 "prompt_encoder": self.prompt_encoder.base if self.prompt_encoder is not None else None}
        for name, module in parts.items():
            if module is not None and getattr(self.config, f"freeze_{name}"):
                module.requires_grad_(False)

    def hold_frozen_in(self, dtype: torch.dtype) -> list[str]:
        """Cast the parts that do not train (the LM, the prompt and audio encoders' backbones, each only when
        none of its parameters requires grad) to ``dtype``; returns their names.

        For training with a frozen LM in bf16: autocast would cast every frozen fp32 weight to bf16 again at
        every step, forward and backward; held in bf16 they are read as they are. The trainable parts stay in
        their dtype (fp32, under autocast), and gradients still flow through the bf16 LM to the prefix."""
        parts = {"lm": self.lm, "audio_encoder.base": self.audio_encoder.base}
        if self.prompt_encoder is not None:
            parts["prompt_encoder.base"] = self.prompt_encoder.base
        cast = []
        for name, module in parts.items():
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.to(dtype)
                cast.append(name)
        if "prompt_encoder.base" in cast:  # cached rows were computed in the old dtype
            self.prompt_encoder.enable_cache(self.prompt_encoder.cache_size)
        return cast

    def load_clap_encoders(self, clap: nn.Module) -> list[str]:
        """Start from a trained `CLAP`'s encoders, as Pengi starts from CLAP's: its audio encoder (front end,
        tower, projection) always, its text encoder too when this model has a prompt encoder. The shapes must
        match exactly. Returns the parts copied."""
        parts = [("audio_encoder", self.audio_encoder, clap.audio_encoder)]
        if self.prompt_encoder is not None:
            parts.append(("prompt_encoder", self.prompt_encoder, clap.text_encoder))
        for name, target, source in parts:
            ours, theirs = target.state_dict(), source.state_dict()
            wrong = sorted(k for k in ours.keys() | theirs.keys()
                           if k not in ours or k not in theirs or ours[k].shape != theirs[k].shape)
            if wrong:
                raise ValueError(f"the CLAP model's {name} does not match this model's: {', '.join(wrong[:8])}"
                                 + (f" and {len(wrong) - 8} more" if len(wrong) > 8 else ""))
            target.load_state_dict(theirs)
        return [name for name, _, _ in parts]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, TransformerMapper):
            nn.init.normal_(module.prefix_const, std=1.0)

    # ------------------------------------------------------------------ tensors in, tensors out
    def audio_embedding(self, waveforms: torch.Tensor, waveform_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, samples)`` at the model's sample rate -> audio embeddings ``(batch, d_proj)``.

        ``waveform_lengths``: samples per clip of a right-padded batch, for a variable-length (SLAP) tower.
        """
        return self.audio_encoder(waveforms.to(self.device), waveform_lengths)

    def prompt_embedding(self, prompt_input_ids: torch.Tensor, prompt_attention_mask: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings ``(batch, d_proj)``; with no prompt encoder, LM token embeddings ``(batch, n, d_lm)``."""
        ids, mask = prompt_input_ids.to(self.device), prompt_attention_mask.to(self.device)
        if self.prompt_encoder is None:
            return self.lm.get_input_embeddings()(ids)
        return self.prompt_encoder(ids, mask)

    def audio_prefix(self, audio_embedding: torch.Tensor) -> torch.Tensor:
        if self.config.normalize_audio_embedding:
            audio_embedding = F.normalize(audio_embedding, dim=-1)
        return self.audio_mapper(audio_embedding)

    def text_prefix(self, prompt_embedding: torch.Tensor, prompt_attention_mask: torch.Tensor,
                    training_path: bool = False) -> torch.Tensor:
        """``training_path``: called from `forward`. The release normalised the prompt embedding there but not
        when generating, so ``compat="pengi-release"`` normalises it on the training path only."""
        release = self.config.compat == "pengi-release"
        if self.prompt_encoder is None:
            return self.text_mapper(prompt_embedding, None if release else prompt_attention_mask.to(self.device))
        if self.config.normalize_prompt_embedding and (training_path or not release):
            prompt_embedding = F.normalize(prompt_embedding, dim=-1)
        return self.text_mapper(prompt_embedding)

    def prefix(self, waveforms: torch.Tensor | None, prompt_input_ids: torch.Tensor,
               prompt_attention_mask: torch.Tensor, audio_embedding: torch.Tensor | None = None,
               training_path: bool = False, waveform_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``[audio prefix, text prefix]`` ``(batch, audio_prefix_length + text_prefix_length, d_lm)``, followed
        by the prompt's LM token embeddings (``prompt_max_length`` more) with ``append_prompt_tokens``."""
        if audio_embedding is None:
            audio_embedding = self.audio_embedding(waveforms, waveform_lengths)
        audio = self.audio_prefix(audio_embedding)
        if self.text_mapper is None:
            return audio
        prompt = self.prompt_embedding(prompt_input_ids, prompt_attention_mask)
        text = self.text_prefix(prompt, prompt_attention_mask, training_path)
        parts = [audio, text.to(audio.dtype)] + ([prompt.to(audio.dtype)] if self.config.append_prompt_tokens else [])
        return torch.cat(parts, dim=1)

    def forward(self, waveforms: torch.Tensor, prompt_input_ids: torch.Tensor, prompt_attention_mask: torch.Tensor,
                input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, waveform_lengths: torch.Tensor | None = None,
                **kwargs: Any) -> CausalLMOutputWithPast:
        """Teacher-forced LM over ``[prefix, answer]``; the loss covers answer tokens only.

        ``input_ids``/``attention_mask`` are the answers (from `PengiProcessor.answers`, end-of-text
        included, right-padded). ``labels`` default to ``input_ids`` with padding set to -100; the prefix
        is always -100.
        """
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(self.device)
        if labels is None:
            labels = input_ids.masked_fill(attention_mask == 0, -100)
        prefix = self.prefix(waveforms, prompt_input_ids, prompt_attention_mask, training_path=True,
                             waveform_lengths=waveform_lengths)
        tokens = self.lm.get_input_embeddings()(input_ids)
        embeds = torch.cat([prefix.to(tokens.dtype), tokens], dim=1)  # in the LM's dtype
        n, p = input_ids.shape[0], prefix.shape[1]
        full_mask = torch.cat([attention_mask.new_ones(n, p), attention_mask], dim=1)
        full_labels = torch.cat([labels.new_full((n, p), -100), labels.to(self.device)], dim=1)
        return self.lm(inputs_embeds=embeds, attention_mask=full_mask, labels=full_labels, **kwargs)

    @torch.inference_mode()
    def generate_from_prefix(self, prefix: torch.Tensor, return_scores: bool = False,
                             **generate_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decode from prefix embeddings with the LM's own (KV-cached) `generate`.

        Returns the new token ids ``(batch * num_return_sequences, length)`` and, with ``return_scores``,
        each sequence's mean log-probability per generated token (beam search: its length-normalised score).
        """
        tok = self._require_processor().tokenizer
        stop = list(self.config.stop_token_ids or [tok.eos_token_id])
        settings = dict(max_new_tokens=self.config.max_new_tokens, eos_token_id=stop, pad_token_id=tok.pad_token_id)
        if not generate_kwargs.get("do_sample"):
            settings["num_beams"] = self.config.num_beams
        settings.update(generate_kwargs)
        prefix = prefix.to(self.lm.get_input_embeddings().weight.dtype)  # an LM held in bf16 (`hold_frozen_in`)
        mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        out = self.lm.generate(inputs_embeds=prefix, attention_mask=mask, return_dict_in_generate=True,
                               output_scores=return_scores, **settings)
        scores = None
        if return_scores:
            if getattr(out, "sequences_scores", None) is not None:
                scores = out.sequences_scores
            else:
                step = self.lm.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
                is_eos = torch.isin(out.sequences[:, -step.shape[1]:], torch.tensor(stop, device=step.device)).long()
                keep = ((is_eos.cumsum(dim=1) - is_eos) == 0) & torch.isfinite(step)  # up to the first EOS
                scores = step.masked_fill(~keep, 0).sum(1) / keep.sum(1).clamp(min=1)
        return out.sequences, scores

    # ------------------------------------------------------------------ user inputs in, text out
    def embed_audio(self, audio: AudioSource | Sequence[AudioSource]) -> torch.Tensor:
        """Audio embeddings ``(batch, d_proj)`` for paths, arrays or a mix of them."""
        with torch.inference_mode():
            return self.audio_embedding(**self._require_processor().audio(as_list(audio)))

    def embed_prompts(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Prompt embeddings ``(batch, d_proj)`` (with no prompt encoder: LM token embeddings ``(batch, n, d_lm)``)."""
        enc = self._require_processor().prompts(as_list(prompts))
        with torch.inference_mode():
            return self.prompt_embedding(**enc)

    def prefixes(self, audio: AudioSource | Sequence[AudioSource],
                 prompts: str | Sequence[str] = DEFAULT_PROMPT) -> tuple[torch.Tensor, torch.Tensor]:
        """The audio prefix and the text prefix that the LM sees, ``(batch, length, d_lm)`` each."""
        sources, texts = _pair_up(as_list(audio), as_list(prompts))
        proc = self._require_processor()
        enc = proc.prompts(texts)
        with torch.inference_mode():
            audio_prefix = self.audio_prefix(self.audio_embedding(**proc.audio(sources)))
            if self.text_mapper is None:
                return audio_prefix, audio_prefix.new_zeros(audio_prefix.shape[0], 0, audio_prefix.shape[2])
            text_prefix = self.text_prefix(self.prompt_embedding(**enc), enc["prompt_attention_mask"])
        return audio_prefix, text_prefix

    def generate(self, audio: AudioSource | Sequence[AudioSource], prompts: str | Sequence[str] = DEFAULT_PROMPT,
                 *, batch_size: int | None = None, return_scores: bool = False,
                 **generate_kwargs: Any) -> list[Any]:
        """Answer ``prompts`` about ``audio``: one string per clip, in order.

        ``audio`` is a path, an ``(array, sample_rate)`` pair, a datasets audio dict, or a list of them;
        ``prompts`` is one prompt for all clips or one per clip. Decoding options are the LM's `generate`
        arguments (``num_beams``, ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``max_new_tokens``,
        ``num_return_sequences``, ...). With ``num_return_sequences > 1`` each clip gets a list of strings;
        with ``return_scores`` each string becomes a ``(text, mean log-prob per token)`` pair.
        """
        sources, texts = _pair_up(as_list(audio), as_list(prompts))
        proc = self._require_processor()
        waves = [proc.clip(proc.load(s, describe_source(s, i))) for i, s in enumerate(sources)]
        return self.generate_from_waveforms(waves, texts, batch_size, return_scores, generate_kwargs)

    def generate_windows(self, audio: AudioSource | Sequence[AudioSource],
                         prompts: str | Sequence[str] = DEFAULT_PROMPT, *, hop_seconds: float | None = None,
                         batch_size: int | None = None,
                         **generate_kwargs: Any) -> list[list[dict[str, Any]]]:
        """Process each recording as consecutive clip-length windows (``hop_seconds`` apart; default no overlap).

        Returns, per recording, ``[{"start": s, "end": e, "text": ...}, ...]`` with times in seconds.
        """
        sources, texts = _pair_up(as_list(audio), as_list(prompts))
        proc = self._require_processor()
        spans, waves, wave_prompts = [], [], []
        for i, (source, prompt) in enumerate(zip(sources, texts)):
            windows = proc.windows(proc.load(source, describe_source(source, i)), hop_seconds)
            spans.append([(w.start, w.end) for w in windows])
            waves += [w.wave for w in windows]
            wave_prompts += [prompt] * len(windows)
        outputs = iter(self.generate_from_waveforms(waves, wave_prompts, batch_size, False, generate_kwargs))
        return [[{"start": s, "end": e, "text": next(outputs)} for s, e in clip] for clip in spans]

    def describe(self, audio: AudioSource | Sequence[AudioSource], **generate_kwargs: Any) -> list[dict[str, str]]:
        """Caption, metadata and sound events of each clip (Pengi's three describe prompts), one dict per clip."""
        sources = as_list(audio)
        proc = self._require_processor()
        waves = proc.batch([proc.clip(proc.load(s, describe_source(s, i))) for i, s in enumerate(sources)])
        with torch.inference_mode():
            audio_embedding = self.audio_embedding(**waves)
        results: list[dict[str, str]] = [{} for _ in sources]
        for field, prompt in DESCRIBE_PROMPTS.items():
            enc = proc.prompts([prompt] * len(sources))
            with torch.inference_mode():
                prefix = self.prefix(None, audio_embedding=audio_embedding, **enc)
            ids, _ = self.generate_from_prefix(prefix, **generate_kwargs)
            for result, text in zip(results, proc.decode(ids)):
                result[field] = text
        return results

    def prefix_from_waveforms(self, waves: list[torch.Tensor], prompts: list[str]) -> torch.Tensor:
        """`prefix` for clips already fitted by the processor, one prompt each: what `generate_from_waveforms`
        decodes from (and what `pengi serve` batches)."""
        proc = self._require_processor()
        enc = proc.prompts(prompts)
        with torch.inference_mode():
            audio = proc.batch(waves)
            return self.prefix(audio["waveforms"], waveform_lengths=audio.get("waveform_lengths"), **enc)

    def generate_from_waveforms(self, waves: list[torch.Tensor], prompts: list[str], batch_size: int | None = None,
                                return_scores: bool = False, generate_kwargs: dict[str, Any] | None = None
                                ) -> list[Any]:
        """`generate` for clips already loaded and fitted by the processor (``clip_samples`` long each, or any
        length up to it for a variable-length tower)."""
        generate_kwargs = generate_kwargs or {}
        if self.text_mapper is None and any(p != DEFAULT_PROMPT for p in prompts):
            warnings.warn("this model reads no prompt (text_prefix_length=0, e.g. clapcap): it captions every clip "
                          "and the prompts are ignored", stacklevel=3)
        proc = self._require_processor()
        per_input = generate_kwargs.get("num_return_sequences", 1)
        step = batch_size or max(len(waves), 1)
        results: list[Any] = []
        for start in range(0, len(waves), step):
            chunk = slice(start, start + step)
            prefix = self.prefix_from_waveforms(waves[chunk], prompts[chunk])
            ids, scores = self.generate_from_prefix(prefix, return_scores=return_scores, **generate_kwargs)
            texts = proc.decode(ids)
            items: list[Any] = list(zip(texts, scores.tolist())) if return_scores else texts
            if per_input > 1:
                items = [items[i:i + per_input] for i in range(0, len(items), per_input)]
            results += items
        return results

    # ------------------------------------------------------------------ saving and loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None = None, *args: Any,
                        **kwargs: Any) -> Pengi:
        """Load a model folder (or hub name); with no name, the small default model shipped inside pengi."""
        if pretrained_model_name_or_path is None:
            pretrained_model_name_or_path = DEFAULT_MODEL_DIR
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


def _pair_up(sources: list[Any], prompts: list[str]) -> tuple[list[Any], list[str]]:
    if not sources:
        raise PengiInputError("audio", "no audio inputs given")
    if len(prompts) == 1:
        prompts = prompts * len(sources)
    if len(prompts) != len(sources):
        raise PengiInputError("prompts", f"got {len(prompts)} prompts for {len(sources)} audio inputs; "
                              "give one prompt, or one per input")
    return sources, prompts
