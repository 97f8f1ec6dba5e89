"""OpenAI's chat-completions and embeddings schemas: requests in, responses and stream chunks out.

Pengi answers one prompt about one clip; a chat request is a conversation. The rule (also in the README):

* the **prompt** is the text of the **last user message** (its text parts joined by spaces);
* the **clip** is the **last audio part of the conversation**: the one in the last user message if it has one
  (more than one there is refused), else the latest audio of an earlier message (so a follow-up question about
  the same clip may leave the audio out);
* system/developer messages, assistant turns and earlier user text are not read; the response's ``warnings``
  field says what was left out.

``temperature`` absent or 0 means the model's own decoding (its ``num_beams``; greedy when 1), which is
deterministic, so ``n > 1`` returns ``n`` copies of the one answer; ``temperature > 0`` samples (with ``top_p``),
and ``n`` independent samples are drawn; a ``seed`` makes sampling repeatable.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import decoding as dec
from .audio_input import AudioRef, normalize_format
from .errors import bad_request

AUDIO_PARTS = ("input_audio", "audio_url")
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
MAX_STOP = 4


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


@dataclass
class ChatRequest:
    model: str | None
    prompt: str
    prompt_param: str
    audio: AudioRef
    decoding: dec.Decoding
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    stop: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def copies(self) -> int:
        """Choices made by copying the one deterministic answer (1 when sampling draws ``n`` answers)."""
        return 1 if self.decoding.do_sample else self.n


def _check_object(value: Any, param: str, what: str = "an object") -> dict:
    if not isinstance(value, dict):
        raise bad_request(f"{param}: expected {what}, got {json_kind(value)}", param)
    return value


def json_kind(value: Any) -> str:
    """What a JSON value is, for error messages: "an object", "an array", "a string", ..."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def model_field(value: Any) -> str | None:
    """A request's ``model`` field: a string, or None when absent or empty."""
    if value is not None and not isinstance(value, str):
        raise bad_request(f"model: expected a string, got {json_kind(value)}", "model")
    return value or None


def audio_part(part: dict, param: str) -> AudioRef:
    """An ``input_audio`` or ``audio_url`` content part as an `AudioRef`."""
    kind = part["type"]
    if kind == "input_audio":
        inner = _check_object(part.get("input_audio"), f"{param}.input_audio")
        if "data" not in inner:
            raise bad_request(f"{param}.input_audio.data: missing (the base64 bytes of the audio file)",
                              f"{param}.input_audio.data", "missing_audio")
        fmt = normalize_format(inner.get("format"), f"{param}.input_audio.format")
        return AudioRef(f"{param}.input_audio.data", "base64", inner["data"], fmt)
    inner = part.get("audio_url")
    url = inner.get("url") if isinstance(inner, dict) else inner
    if not isinstance(url, str):
        raise bad_request(f"{param}.audio_url.url: expected a URL string (data:audio/wav;base64,...)",
                          f"{param}.audio_url.url", "invalid_audio_url")
    return AudioRef(f"{param}.audio_url.url", "url", url)


def parse_chat(body: Any, *, max_new_tokens_limit: int, reads_prompt: bool = True,
               default_prompt: str = "generate audio caption") -> ChatRequest:
    body = _check_object(body, "body", "a JSON object")
    unsupported(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages: required, a non-empty array of {role, content} messages", "messages",
                          "missing_parameter" if messages is None else "invalid_value")
    audio: list[tuple[int, AudioRef]] = []  # (message index, part) in conversation order
    texts: dict[int, list[str]] = {}
    last_user = None
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        _check_object(message, param)
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(f"{param}.role: expected one of {', '.join(ROLES)}, got {role!r}", f"{param}.role")
        if role == "user":
            last_user = i
        content = message.get("content")
        if content is None or isinstance(content, str):
            texts[i] = [content] if content else []
            continue
        if not isinstance(content, list):
            raise bad_request(f"{param}.content: expected a string or an array of content parts, got "
                              f"{json_kind(content)}", f"{param}.content")
        texts[i] = []
        for j, part in enumerate(content):
            pparam = f"{param}.content[{j}]"
            _check_object(part, pparam)
            kind = part.get("type")
            if kind == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise bad_request(f"{pparam}.text: expected a string, got {json_kind(text)}", f"{pparam}.text")
                texts[i].append(text)
            elif kind in AUDIO_PARTS:
                if role == "user":
                    audio.append((i, audio_part(part, pparam)))
            elif role == "user":
                raise bad_request(f"{pparam}.type: pengi reads text and audio parts (text, input_audio, audio_url); "
                                  f"{kind!r} is not supported", f"{pparam}.type", "unsupported_content")
    if last_user is None:
        raise bad_request("messages: there is no user message; the last user message's text is the prompt",
                          "messages", "missing_prompt")
    prompt_param = f"messages[{last_user}].content"
    prompt = " ".join(t.strip() for t in texts.get(last_user, []) if t and t.strip())
    warnings: list[str] = []
    if not prompt:
        if reads_prompt:
            raise bad_request(f"{prompt_param}: the last user message has no text, and pengi needs a prompt: it "
                              "reads the text of the last user message (e.g. 'generate audio caption' or a question)",
                              prompt_param, "missing_prompt")
        prompt = default_prompt
    in_last = [ref for i, ref in audio if i == last_user]
    if len(in_last) > 1:
        raise bad_request(f"{prompt_param}: {len(in_last)} audio parts in one message; pengi answers about one clip "
                          "per request (send one request per clip, or use /v1/generate for several files)",
                          prompt_param, "too_many_audio_parts")
    if not audio:
        raise bad_request("messages: no audio in the conversation; add an input_audio part ({'type': 'input_audio', "
                          "'input_audio': {'data': <base64>, 'format': 'wav'}}) to the last user message",
                          "messages", "missing_audio")
    clip = in_last[0] if in_last else audio[-1][1]
    ignored = [i for i, parts in texts.items() if i != last_user and parts and any(p.strip() for p in parts if p)]
    ignored_audio = len(audio) - 1
    if ignored or ignored_audio:
        what = []
        if ignored:
            what.append(f"the text of {len(ignored)} other message(s) ({', '.join(f'messages[{i}]' for i in ignored)})")
        if ignored_audio:
            what.append(f"{ignored_audio} earlier audio part(s)")
        warnings.append("pengi reads one prompt per clip, not a conversation: the prompt is the text of the last user "
                        f"message ({prompt_param}) and the clip is the last audio of the conversation "
                        f"({clip.param}); {' and '.join(what)} were not read")

    model = model_field(body.get("model"))
    options, names = chat_options(body, warnings)
    decoding = dec.build(options, max_new_tokens_limit=max_new_tokens_limit, names=names)
    n = dec.coerce(body.get("n"), int, "n") or 1
    if not 1 <= n <= dec.MAX_SEQUENCES:
        raise bad_request(f"n: must be between 1 and {dec.MAX_SEQUENCES}, got {n}", "n")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise bad_request(f"stream: expected true or false, got {stream!r}", "stream")
    stream_options = body.get("stream_options") or {}
    _check_object(stream_options, "stream_options")
    include_usage = bool(stream_options.get("include_usage"))
    return ChatRequest(model, prompt, prompt_param, clip, decoding, n, stream, include_usage,
                       parse_stop(body.get("stop")), warnings)


def chat_options(body: dict, warnings: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """OpenAI's sampling fields as `generate` options, with the field each one came from."""
    names: dict[str, str] = {}
    options: dict[str, Any] = {}
    for field_name in ("max_tokens", "max_completion_tokens"):  # max_completion_tokens wins when both are given
        value = dec.coerce(body.get(field_name), int, field_name)
        if value is not None:
            options["max_new_tokens"], names["max_new_tokens"] = value, field_name
    temperature = dec.coerce(body.get("temperature"), float, "temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        raise bad_request(f"temperature: must be between 0 and 2, got {temperature:g}", "temperature")
    top_p = dec.coerce(body.get("top_p"), float, "top_p")
    seed = dec.coerce(body.get("seed"), int, "seed")
    n = dec.coerce(body.get("n"), int, "n") or 1
    if temperature:
        options.update(do_sample=True, temperature=temperature, num_beams=1)
        if top_p is not None:
            options["top_p"] = top_p
        if seed is not None:
            options["seed"] = seed
        if n > 1:
            options["num_return_sequences"] = n
        names.update(top_p="top_p", seed="seed", num_return_sequences="n")
    else:
        if top_p is not None and top_p != 1:
            warnings.append("top_p has no effect without temperature > 0: the model's own decoding "
                            "(greedy or beam search) was used")
            if not 0 < top_p <= 1:
                raise bad_request(f"top_p: must be in (0, 1], got {top_p:g}", "top_p")
        if seed is not None and not 0 <= seed <= dec.MAX_SEED:
            raise bad_request(f"seed: must be between 0 and {dec.MAX_SEED}", "seed")
    return options, names


def unsupported(body: dict) -> None:
    """Refuse fields that would change the answer if they were silently ignored."""
    def refuse(name: str, why: str) -> None:
        raise bad_request(f"{name}: {why}", name, "unsupported_parameter")

    if body.get("tools") or body.get("functions"):
        refuse("tools", "pengi models do not call tools")
    if body.get("tool_choice") not in (None, "none", "auto"):
        refuse("tool_choice", "pengi models do not call tools")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        refuse("response_format", "only plain text answers are made")
    if body.get("logprobs") or body.get("top_logprobs"):
        refuse("logprobs", "log-probabilities are not returned by the chat endpoint; /v1/generate has "
               "return_scores (mean log-probability per token)")
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name):
            refuse(name, "not supported; /v1/generate takes repetition_penalty and no_repeat_ngram_size")
    if body.get("logit_bias"):
        refuse("logit_bias", "not supported")
    modalities = body.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        refuse("modalities", "pengi answers in text only")
    if body.get("audio"):
        refuse("audio", "pengi answers in text only (audio input goes in the messages)")


def parse_stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("stop: expected a non-empty string or an array of them", "stop")
    if len(stops) > MAX_STOP:
        raise bad_request(f"stop: at most {MAX_STOP} stop sequences, got {len(stops)}", "stop")
    return stops


def apply_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` cut before the first stop sequence, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def usage(prompt_tokens: int, completion_tokens: int, audio_tokens: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                           "total_tokens": prompt_tokens + completion_tokens}
    if audio_tokens is not None:
        out["prompt_tokens_details"] = {"audio_tokens": audio_tokens, "cached_tokens": 0}
    return out


def completion(rid: str, created: int, model: str, choices: list[tuple[str, str]], usage_: dict,
               warnings: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": rid, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": None, "finish_reason": reason} for i, (text, reason) in enumerate(choices)],
        "usage": usage_, "system_fingerprint": None,
    }
    if warnings:
        body["warnings"] = warnings
    return body


def chunk(rid: str, created: int, model: str, index: int | None, delta: dict | None = None,
          finish_reason: str | None = None, usage_: dict | None = None) -> dict[str, Any]:
    choices = [] if index is None else [{"index": index, "delta": delta or {}, "logprobs": None,
                                         "finish_reason": finish_reason}]
    body: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "system_fingerprint": None, "choices": choices}
    if usage_ is not None:
        body["usage"] = usage_
    return body


def now() -> int:
    return int(time.time())


# ----------------------------------------------------------------------------- embeddings
def embedding_items(embeds: Sequence[np.ndarray], encoding_format: str) -> list[dict[str, Any]]:
    """OpenAI's ``data`` list; ``base64`` is the float32 little-endian bytes, as the openai client decodes them."""
    out = []
    for i, e in enumerate(embeds):
        vector = np.asarray(e, dtype="<f4")
        value: Any = base64.b64encode(vector.tobytes()).decode("ascii") if encoding_format == "base64" \
            else vector.tolist()
        out.append({"object": "embedding", "index": i, "embedding": value})
    return out
