"""pengi's own endpoints: ``/v1/generate`` (Pengi), ``/v1/audio/classifications`` and the audio half of
``/v1/embeddings`` (CLAP). Each takes JSON (audio as base64 or ``data:`` URLs) or a multipart upload (files),
and parses into one request object, so both forms are checked by the same code.

``/v1/generate`` fields:

    file / files (multipart) or audio (JSON)   one or more clips
    prompt                                     one prompt for every clip, or one per clip (multipart: repeat it)
    windows, hop_seconds                       long recordings as consecutive clip-length windows (generate_windows)
    max_new_tokens, num_beams, do_sample, temperature, top_k, top_p, num_return_sequences, repetition_penalty,
    length_penalty, no_repeat_ngram_size      the options `Pengi.generate` takes
    seed                                       makes sampling repeatable
    return_scores                              mean log-probability per generated token with each answer
    model                                      optional; checked against the served model
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Any

from pengi import CLAP

from . import decoding as dec
from .audio_input import FORMAT_ALIASES, FORMATS, UNDECODABLE, AudioRef, normalize_format
from .errors import bad_request
from .openai_api import AUDIO_PARTS, audio_part, json_kind, model_field

FILE_FIELDS = ("file", "files", "audio")
MAX_INPUTS = 2048
DEFAULT_TEMPLATE = inspect.signature(CLAP.label_texts).parameters["template"].default


@dataclass
class Body:
    """A request body: JSON (``values`` holds the object) or a form (each field's values, files apart)."""

    values: dict[str, Any]
    files: list[AudioRef] = field(default_factory=list)
    is_form: bool = False

    def get(self, name: str, kind: type | None = None) -> Any:
        value = self.values.get(name)
        if self.is_form and isinstance(value, list):
            if len(value) > 1:
                raise bad_request(f"{name}: given {len(value)} times; give it once", name)
            value = value[0] if value else None
        return dec.coerce(value, kind, name) if kind is not None else value

    def get_list(self, name: str) -> list[Any] | None:
        value = self.values.get(name)
        if value is None:
            return None
        return value if isinstance(value, list) else [value]

    def check_fields(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.values) - allowed)
        if unknown:
            raise bad_request(f"{unknown[0]}: unknown field; the fields are {', '.join(sorted(allowed))}",
                              unknown[0], "unknown_parameter")


def format_from_name(filename: str | None, content_type: str | None, param: str) -> str | None:
    """The upload's format from its file name (or content type); None when they do not say."""
    ext = os.path.splitext(filename or "")[1].lstrip(".").lower()
    if ext in UNDECODABLE:
        return normalize_format(ext, param)  # raises with a clear message
    if ext in FORMATS or ext in FORMAT_ALIASES:
        return normalize_format(ext, param)
    if content_type and content_type.lower().startswith("audio/"):
        try:
            return normalize_format(content_type, param)
        except Exception:
            return None
    return None


def json_audio(value: Any, param: str = "audio") -> list[AudioRef]:
    """``audio`` of a JSON body: a base64 string, a data: URL, ``{"data", "format", "name"}``, ``{"url"}``, an
    OpenAI content part, or an array of them."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    refs = []
    for i, item in enumerate(items):
        p = f"{param}[{i}]" if isinstance(value, list) else param
        if isinstance(item, str):
            is_url = item[:5].lower() == "data:" or item[:7].lower() == "http://" or item[:8].lower() == "https://"
            refs.append(AudioRef(p, "url" if is_url else "base64", item))
        elif isinstance(item, dict) and item.get("type") in AUDIO_PARTS:
            refs.append(audio_part(item, p))
        elif isinstance(item, dict) and "data" in item:
            refs.append(AudioRef(f"{p}.data", "base64", item["data"], normalize_format(item.get("format"),
                                                                                       f"{p}.format"),
                                 item.get("name") if isinstance(item.get("name"), str) else None))
        elif isinstance(item, dict) and "url" in item:
            refs.append(AudioRef(f"{p}.url", "url", item["url"]))
        else:
            raise bad_request(f"{p}: expected a base64 string, a data: URL or {{\"data\": <base64>, \"format\": "
                              f"\"wav\"}}, got {json_kind(item)}", p, "invalid_audio")
    return refs


def _texts(values: list[Any] | None, param: str, *, split_commas: bool = False) -> list[str]:
    out = []
    for i, v in enumerate(values or []):
        p = f"{param}[{i}]" if values and len(values) > 1 else param
        if not isinstance(v, str):
            raise bad_request(f"{p}: expected a string, got {json_kind(v)}", p)
        out += [x.strip() for x in v.split(",")] if split_commas else [v]
    return out


# ----------------------------------------------------------------------------- /v1/generate
@dataclass
class GenerateRequest:
    model: str | None
    audio: list[AudioRef]
    prompts: list[str]
    prompt_params: list[str]
    windows: bool
    hop_seconds: float | None
    decoding: dec.Decoding


GENERATE_FIELDS = {"model", "audio", "prompt", "windows", "hop_seconds", *dec.OPTION_TYPES}


def parse_generate(body: Body, *, max_new_tokens_limit: int, reads_prompt: bool = True,
                   default_prompt: str = "generate audio caption") -> GenerateRequest:
    body.check_fields(GENERATE_FIELDS - ({"audio"} if body.is_form else set()))
    audio = body.files if body.is_form else json_audio(body.values.get("audio"))
    if not audio:
        where = "upload one or more files in the 'file' field" if body.is_form else \
            "give 'audio': a base64 string, a data: URL, or an array of them"
        raise bad_request(f"no audio: {where}", "file" if body.is_form else "audio", "missing_audio")
    if len(audio) > MAX_INPUTS:
        raise bad_request(f"at most {MAX_INPUTS} clips per request, got {len(audio)}", "audio")
    prompts = _texts(body.get_list("prompt"), "prompt")
    params = [f"prompt[{i}]" if len(prompts) > 1 else "prompt" for i in range(len(prompts))]
    if not prompts:
        if reads_prompt:
            raise bad_request("prompt: missing; give a prompt (e.g. 'generate audio caption' or a question), or one "
                              "per clip", "prompt", "missing_prompt")
        prompts, params = [default_prompt], ["prompt"]
    for p, param in zip(prompts, params):
        if not p.strip() and reads_prompt:
            raise bad_request(f"{param}: the prompt is empty", param, "missing_prompt")
    if len(prompts) == 1:
        prompts, params = prompts * len(audio), params * len(audio)
    elif len(prompts) != len(audio):
        raise bad_request(f"prompt: got {len(prompts)} prompts for {len(audio)} audio inputs; give one prompt, or one "
                          "per input", "prompt")
    options = {name: body.get(name, kind) for name, kind in dec.OPTION_TYPES.items()}
    decoding = dec.build(options, max_new_tokens_limit=max_new_tokens_limit)
    windows = bool(body.get("windows", bool))
    hop = body.get("hop_seconds", float)
    if hop is not None and hop <= 0:
        raise bad_request(f"hop_seconds: must be greater than 0, got {hop:g}", "hop_seconds")
    if hop is not None and not windows:
        raise bad_request("hop_seconds: only applies with windows=true", "hop_seconds")
    model = model_field(body.get("model"))
    return GenerateRequest(model, audio, [p.strip() for p in prompts], params, windows, hop, decoding)


# ----------------------------------------------------------------------------- /v1/audio/classifications
@dataclass
class ClassifyRequest:
    model: str | None
    audio: list[AudioRef]
    labels: list[str]
    template: str
    multi_label: bool
    top_k: int


CLASSIFY_FIELDS = {"model", "audio", "labels", "template", "multi_label", "top_k"}


def parse_classify(body: Body) -> ClassifyRequest:
    body.check_fields(CLASSIFY_FIELDS - ({"audio"} if body.is_form else set()))
    audio = body.files if body.is_form else json_audio(body.values.get("audio"))
    if not audio:
        raise bad_request("no audio: " + ("upload one or more files in the 'file' field" if body.is_form else
                                          "give 'audio': a base64 string, a data: URL, or an array of them"),
                          "file" if body.is_form else "audio", "missing_audio")
    raw = body.get_list("labels")
    labels = [x for x in _texts(raw, "labels", split_commas=body.is_form or isinstance(body.values.get("labels"), str))
              if x]
    if not labels:
        raise bad_request("labels: missing; give the class labels (an array, or comma-separated)", "labels",
                          "missing_parameter")
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise bad_request(f"labels: given more than once: {', '.join(repeated)}", "labels")
    template = body.get("template") or DEFAULT_TEMPLATE
    if not isinstance(template, str):
        raise bad_request(f"template: expected a string with {{label}} in it, got {json_kind(template)}", "template")
    multi_label = bool(body.get("multi_label", bool))
    top_k = body.get("top_k", int)
    if top_k is not None and top_k < 1:
        raise bad_request(f"top_k: must be at least 1, got {top_k}", "top_k")
    model = model_field(body.get("model"))
    return ClassifyRequest(model, audio, labels, template, multi_label, min(top_k or len(labels), len(labels)))


# ----------------------------------------------------------------------------- /v1/embeddings
@dataclass
class EmbedRequest:
    model: str | None
    items: list[str | AudioRef]  # in the order of the response's data
    encoding_format: str = "float"
    dimensions: int | None = None


EMBED_FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}


def parse_embeddings(body: Body) -> EmbedRequest:
    body.check_fields(EMBED_FIELDS)
    items: list[str | AudioRef] = []
    if body.is_form:
        items += _texts(body.get_list("input"), "input")
        items += body.files
    else:
        value = body.values.get("input")
        if value is None:
            raise bad_request("input: required: a text, an array of texts, or audio parts ({'type': 'input_audio', "
                              "'input_audio': {'data': <base64>, 'format': 'wav'}})", "input", "missing_parameter")
        values = value if isinstance(value, list) else [value]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values) or \
                any(isinstance(v, list) for v in values):
            raise bad_request("input: token arrays are not supported; send the texts", "input")
        for i, v in enumerate(values):
            p = f"input[{i}]" if isinstance(value, list) else "input"
            if isinstance(v, str):
                items.append(v)
            elif isinstance(v, dict) and v.get("type") == "text" and isinstance(v.get("text"), str):
                items.append(v["text"])
            elif isinstance(v, dict) and v.get("type") in AUDIO_PARTS:
                items.append(audio_part(v, p))
            else:
                raise bad_request(f"{p}: expected a text or an audio part, got {json_kind(v)}", p)
    if not items:
        raise bad_request("input: no texts or audio given", "input", "missing_parameter")
    if len(items) > MAX_INPUTS:
        raise bad_request(f"input: at most {MAX_INPUTS} inputs per request, got {len(items)}", "input")
    for i, item in enumerate(items):
        if isinstance(item, str) and not item.strip():
            raise bad_request(f"input[{i}]: the text is empty", f"input[{i}]")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad_request(f"encoding_format: expected 'float' or 'base64', got {encoding!r}", "encoding_format")
    model = model_field(body.get("model"))
    return EmbedRequest(model, items, encoding, body.get("dimensions", int))
