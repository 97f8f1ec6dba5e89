"""The model behind the server, in two halves.

*Engines* (`PengiEngine`, `ClapEngine`) hold the model and run in the model process (`pengi.serving.worker`):
`PengiEngine.run_batch` is what a batch of clips becomes, the steps of `Pengi.generate_from_waveforms`
(``model.prefix_from_waveforms`` -> ``model.generate_from_prefix`` -> ``processor.decode``), keeping the token
ids so that the server can count tokens and tell ``"stop"`` (an end-of-text token) from ``"length"``
(``max_new_tokens`` reached). `ClapEngine` embeds clips and texts and scores labels.

*Fronts* (`PengiFront`, `ClapFront`) live in the server process: the model's processor (tokenizers and audio
settings, no weights) and the facts the request checks need, from the engine's `describe`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Hashable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pengi import CLAP, CLAPConfig, CLAPProcessor, Pengi, PengiConfig, PengiProcessor
from pengi.batch.generation import seeded

from .decoding import Decoding

log = logging.getLogger("pengi.serving")
DEFAULT_MODEL_NAME = "pengi-default"
TASK_PROMPTS = ["generate audio caption", "generate metadata", "this is a sound of",
                "question: what is making this sound?"]


@dataclass
class ClipJob:
    """One clip (mono, fitted to the model's clip length; numpy on the way to the model process) and its prompt."""

    wave: Any
    prompt: str


@dataclass
class ClipResult:
    texts: list[str]
    finish_reasons: list[str]
    completion_tokens: list[int]
    prompt_tokens: int
    scores: list[float] | None = None


@dataclass
class StreamSink:
    """Receives token ids from `generate` as they are made; ``cancelled`` stops the generation."""

    on_tokens: Callable[[list[int]], None]
    cancelled: bool = False
    _first: bool = field(default=True, repr=False)


def _make_streamer(sink: StreamSink):
    from transformers.generation.streamers import BaseStreamer

    class _Streamer(BaseStreamer):
        def put(self, value: torch.Tensor) -> None:
            if sink._first:  # generate hands over the prompt ids first (none here: the prompt is embeddings)
                sink._first = False
                if value.dim() == 2:
                    return
            sink.on_tokens(value.reshape(-1).tolist())

        def end(self) -> None:
            pass

    return _Streamer()


def _make_cancel_criterion(sink: StreamSink):
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            return torch.full((input_ids.shape[0],), sink.cancelled, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Cancelled()])


def model_type_of(path: str | None) -> str | None:
    if path is None:
        return "pengi"
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        return None
    with open(config, encoding="utf-8") as f:
        return json.load(f).get("model_type")


def served_name(path: str | None, name: str | None = None) -> str:
    if name:
        return name
    return DEFAULT_MODEL_NAME if path is None else os.path.basename(os.path.normpath(path))


# ============================================================================= in the model process
def load_engine(path: str | None, device: torch.device, dtype: torch.dtype, name: str | None = None) -> Engine:
    """Load the model folder at ``path`` (None: the default model shipped with pengi) as a Pengi or CLAP engine."""
    kind = model_type_of(path)
    if path is not None and not os.path.exists(path):
        raise OSError(f"{path}: no such model folder")
    if kind == "pengi_clap":
        model = CLAP.from_pretrained(path)
    elif kind in ("pengi", None):
        model = Pengi.from_pretrained(path)
    else:
        raise ValueError(f"{path} holds a {kind!r} model; pengi serve serves Pengi and CLAP models")
    if model.processor is None:
        raise ValueError(f"{path or 'the default model'}: the folder has no tokenizer, so the model cannot read "
                         "text; save it with save_pretrained after attaching its processor")
    model.to(device=device, dtype=dtype).eval()
    engine = (ClapEngine if isinstance(model, CLAP) else PengiEngine)(model, served_name(path, name))
    engine.warm_up()
    return engine


class Engine:
    kind = "model"
    calls: tuple[str, ...] = ()  # the methods the server may call across the process boundary

    def __init__(self, model: Any, name: str):
        self.model = model
        self.processor = model.processor
        self.name = name

    def warm_up(self) -> None:
        """Run the model once at startup (first calls are slow; shapes are found here)."""

    def describe(self) -> dict[str, Any]:
        """What the server process needs to know, as plain data."""
        return {"kind": self.kind, "name": self.name, "source": self.model.name_or_path,
                "sample_rate": self.processor.sample_rate, "clip_samples": self.processor.clip_samples,
                "device": str(self.model.device), "dtype": str(self.model.dtype).removeprefix("torch.")}


class PengiEngine(Engine):
    kind = "pengi"
    calls = ("run_batch", "run_stream")

    def __init__(self, model: Pengi, name: str):
        super().__init__(model, name)
        self.stop_ids = set(model.config.stop_token_ids or [self.processor.tokenizer.eos_token_id])
        self.prefix_length = model.config.audio_prefix_length + model.config.text_prefix_length

    def warm_up(self) -> None:
        silence = np.zeros(self.processor.clip_samples, dtype=np.float32)
        result = self.run_batch(("generate", Decoding(max_new_tokens=2), None), [ClipJob(silence, TASK_PROMPTS[0])])
        self.prefix_length = result[0].prompt_tokens  # measured: whatever the model's layout

    def describe(self) -> dict[str, Any]:
        config = self.model.config
        return {**super().describe(), "prefix_length": self.prefix_length, "stop_ids": sorted(self.stop_ids),
                "max_new_tokens": config.max_new_tokens, "num_beams": config.num_beams}

    def run_batch(self, key: Hashable, payloads: list[ClipJob], **extra: Any) -> list[ClipResult]:
        decoding: Decoding = key[1]
        proc, model = self.processor, self.model
        prefix = model.prefix_from_waveforms([torch.as_tensor(job.wave) for job in payloads],
                                             [job.prompt for job in payloads])
        context = seeded(decoding.seed, model.device) if decoding.seeded else nullcontext()
        with context:
            ids, scores = model.generate_from_prefix(prefix, return_scores=decoding.return_scores,
                                                     **decoding.generate_kwargs(), **extra)
        texts = proc.decode(ids)
        counts, reasons = self._lengths(ids)
        per = decoding.num_return_sequences
        score_list = scores.float().tolist() if scores is not None else None
        results = []
        for i in range(len(payloads)):
            rows = slice(i * per, (i + 1) * per)
            results.append(ClipResult(texts[rows], reasons[rows], counts[rows], prefix.shape[1],
                                      score_list[rows] if score_list is not None else None))
        return results

    def _lengths(self, ids: torch.Tensor) -> tuple[list[int], list[str]]:
        """Tokens generated per row (its end-of-text token included) and why each row stopped."""
        counts, reasons = [], []
        for row in ids.tolist():
            stop = next((i for i, t in enumerate(row) if t in self.stop_ids), None)
            counts.append(len(row) if stop is None else stop + 1)
            reasons.append("length" if stop is None else "stop")
        return counts, reasons

    def run_stream(self, key: Hashable, job: ClipJob, sink: StreamSink) -> ClipResult:
        """One clip, its tokens handed to ``sink`` as they are made (beam search: all at the end)."""
        decoding: Decoding = key[1]
        beams = decoding.num_beams or (1 if decoding.do_sample else self.model.config.num_beams)
        extra: dict[str, Any] = {"stopping_criteria": _make_cancel_criterion(sink)}
        if beams == 1:
            extra["streamer"] = _make_streamer(sink)
        return self.run_batch(key, [job], **extra)[0]


class ClapEngine(Engine):
    kind = "clap"
    calls = ("run_batch", "embed_texts", "classify")

    def warm_up(self) -> None:
        self.run_batch(("clap_audio",), [np.zeros(self.processor.clip_samples, dtype=np.float32)])
        self.model.embed_text(["warm-up"])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dimensions": self.model.config.d_proj}

    def run_batch(self, key: Hashable, payloads: list[Any]) -> list[np.ndarray]:
        with torch.inference_mode():
            waves = torch.stack([torch.as_tensor(w) for w in payloads])
            embeds = self.model.audio_embedding(waves).float().cpu().numpy()
        return list(embeds)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self.model.embed_text(texts).float().cpu().numpy()

    def classify(self, embeds: list[np.ndarray], texts: list[str], multi_label: bool) -> np.ndarray:
        probs = self.model.zero_shot_embeddings(torch.from_numpy(np.stack(embeds)), texts, multi_label)
        return probs.float().cpu().numpy()


# ============================================================================= in the server process
def load_processor(kind: str, source: str) -> Any:
    """The model's processor (tokenizers and audio settings) without its weights."""
    if kind == "clap":
        return CLAPProcessor.from_pretrained(source, CLAPConfig.from_pretrained(source))
    return PengiProcessor.from_pretrained(source, PengiConfig.from_pretrained(source))


class Front:
    """The model as the server process sees it: its processor, name and limits."""

    kind = "model"

    def __init__(self, description: dict[str, Any], processor: Any, path: str | None):
        self.description = description
        self.processor = processor
        self.name: str = description["name"]
        self.path = path
        self.created = int(time.time())
        self.sample_rate: int = description["sample_rate"]
        self.clip_samples: int = description["clip_samples"]
        self.clip_seconds = self.clip_samples / self.sample_rate
        self.config = processor.config

    def info(self) -> dict[str, Any]:
        d = self.description
        return {"kind": self.kind, "sample_rate": self.sample_rate, "clip_seconds": self.clip_seconds,
                "device": d["device"], "dtype": d["dtype"]}


class PengiFront(Front):
    kind = "pengi"

    def __init__(self, description: dict[str, Any], processor: PengiProcessor, path: str | None):
        super().__init__(description, processor, path)
        config = self.config
        self.tokenizer = processor.tokenizer
        self.prompt_tokenizer = processor.prompt_tokenizer or processor.tokenizer
        self.stop_ids = set(description["stop_ids"])
        self.reads_prompt = config.text_prefix_length > 0
        self.prompt_max_length = config.prompt_max_length
        self.audio_prefix_length = config.audio_prefix_length
        self.prefix_length: int = description["prefix_length"]
        self.max_positions = getattr(config.lm_config, "max_position_embeddings", None)
        self._prompt_tokens: dict[str, int] = {}  # tokenizing costs about a millisecond: prompts repeat

    @property
    def max_new_tokens_limit(self) -> int:
        if not self.max_positions:
            return 4096
        return max(self.max_positions - self.prefix_length, 1)

    def info(self) -> dict[str, Any]:
        d = self.description
        return {**super().info(), "max_new_tokens": d["max_new_tokens"], "num_beams": d["num_beams"],
                "max_new_tokens_limit": self.max_new_tokens_limit, "prefix_length": self.prefix_length,
                "audio_prefix_length": self.audio_prefix_length, "reads_prompt": self.reads_prompt,
                "prompt_max_length": self.prompt_max_length, "task_prompts": TASK_PROMPTS}

    def knows_prompt(self, prompt: str) -> bool:
        return prompt in self._prompt_tokens or not self.reads_prompt

    def prompt_warnings(self, prompt: str, param: str) -> list[str]:
        """A warning when the model ignores or truncates the prompt (tokenizes it: `knows_prompt` says whether
        this is instant)."""
        if not self.reads_prompt:
            return [f"{param}: this model reads no prompt (it only captions); the prompt was ignored"]
        n = self._prompt_tokens.get(prompt)
        if n is None:
            n = len(self.prompt_tokenizer(prompt)["input_ids"])
            if len(self._prompt_tokens) > 100_000:
                self._prompt_tokens.clear()
            self._prompt_tokens[prompt] = n
        if n > self.prompt_max_length:
            return [f"{param}: the prompt has {n} tokens; the model reads only the first {self.prompt_max_length}"]
        return []

    def clip_warnings(self, seconds: float, label: str) -> list[str]:
        if seconds > self.clip_seconds * 1.01:
            return [f"{label}: the audio is {seconds:.1f} s long and the model reads {self.clip_seconds:g} s clips, "
                    f"so only its central {self.clip_seconds:g} s were used; send it to /v1/generate with "
                    "windows=true to cover the whole recording"]
        return []

    def decode_tokens(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


class ClapFront(Front):
    kind = "clap"

    def __init__(self, description: dict[str, Any], processor: CLAPProcessor, path: str | None):
        super().__init__(description, processor, path)
        self.tokenizer = processor.tokenizer
        self.dimensions: int = description["dimensions"]

    def info(self) -> dict[str, Any]:
        return {**super().info(), "dimensions": self.dimensions}

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(ids) for ids in self.tokenizer(texts)["input_ids"])


def make_front(description: dict[str, Any], path: str | None) -> Front:
    processor = load_processor(description["kind"], description["source"])
    return (ClapFront if description["kind"] == "clap" else PengiFront)(description, processor, path)
