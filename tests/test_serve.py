"""`pengi serve` end to end: a real server process on a free port, real clients (the `openai` package and httpx).

Answers are compared with `model.generate` on the same clips in this process; a burst of concurrent requests must
be served in batches of more than one (read from /metrics) with every answer right; every kind of bad input gets
a 4xx in OpenAI's error schema and the server goes on serving; SIGTERM finishes the requests in flight.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from pengi import CLAP, Pengi  # noqa: E402
from pengi.synthetic import example  # noqa: E402
from tests.conftest import make_clap, make_tiny, tone  # noqa: E402
from tests.serving_utils import (  # noqa: E402
    ServerProcess,
    audio_message,
    b64,
    batch_histogram,
    encode,
    metric_samples,
)

PROMPTS = ["generate audio caption", "this is a sound of", "question: is the sound loud?", "generate metadata"]
MAX_AUDIO_MB = 1
MAX_AUDIO_SECONDS = 120  # the SIGTERM test sends a 60 s recording


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, gpt2_tokenizer):
    folder = tmp_path_factory.mktemp("served_model") / "tiny-pengi"
    make_tiny(gpt2_tokenizer, seed=3).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(model_dir):
    return Pengi.from_pretrained(model_dir).eval()


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "server.log"
    proc = ServerProcess("--model", model_dir, "--max-audio-mb", MAX_AUDIO_MB, "--max-audio-seconds",
                         MAX_AUDIO_SECONDS, log_path=str(log)).start()
    yield proc
    assert proc.stop() == 0, proc.log()
    assert "Traceback" not in proc.log(), proc.log()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """(path, bytes, format) of clips in several formats, rates and channel counts."""
    folder = tmp_path_factory.mktemp("clips")
    out = []
    for seed, fmt in zip(range(6), ["wav", "flac", "ogg", "wav", "mp3", "wav"]):
        e = example(seed)
        audio, sr = e.audio, e.sample_rate
        if seed == 3:  # stereo at 44.1 kHz: mixed down and resampled by the server as by the model
            sr = 44100
            mono = np.interp(np.arange(int(len(audio) * sr / 16000)) * 16000 / sr, np.arange(len(audio)), audio)
            audio = np.stack([mono, mono * 0.5], axis=1).astype(np.float32)
        data = encode(audio, sr, fmt)
        path = folder / f"clip{seed}.{fmt}"
        path.write_bytes(data)
        out.append((str(path), data, fmt))
    return out


def post(server, path, **kwargs):
    return httpx.post(server.url + path, timeout=60, **kwargs)


def error_of(response, status, code=None, words=()):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    if code is not None:
        assert body["error"]["code"] == code, body
    for word in words:
        assert word.lower() in body["error"]["message"].lower(), body
    return body["error"]


# ----------------------------------------------------------------------------- the basics
def test_health_models_and_metrics(server):
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny-pengi" and health["kind"] == "pengi"
    models = httpx.get(server.url + "/v1/models").json()
    assert models["object"] == "list"
    card = models["data"][0]
    assert card["id"] == "tiny-pengi" and card["object"] == "model"
    assert card["pengi"]["sample_rate"] == 16000 and card["pengi"]["max_audio_mb"] == MAX_AUDIO_MB
    assert httpx.get(server.url + "/v1/models/tiny-pengi").json()["id"] == "tiny-pengi"
    metrics = httpx.get(server.url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in ("pengi_requests_total", "pengi_errors_total", "pengi_queue_wait_seconds", "pengi_batch_size",
                 "pengi_request_latency_seconds"):
        assert f"# TYPE {name.removesuffix('_total')}" in metrics.text, name
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "<title>pengi</title>" in page.text
    assert httpx.get(server.url + "/static/app.js").status_code == 200


def test_chat_completions_with_the_openai_client_equal_generate(server, client, model, clips):
    for (path, data, fmt), prompt in zip(clips, PROMPTS * 2):
        response = client.chat.completions.create(model="tiny-pengi", messages=audio_message(data, prompt, fmt))
        expected = model.generate(path, prompt)[0]
        assert response.choices[0].message.content == expected, (path, prompt)
        assert response.choices[0].message.role == "assistant"
        assert response.choices[0].finish_reason in ("stop", "length")
        assert response.object == "chat.completion" and response.id.startswith("chatcmpl-")
        assert response.model == "tiny-pengi"
        usage = response.usage
        assert usage.prompt_tokens == 8  # the prefix: 4 audio + 4 text positions
        assert usage.prompt_tokens_details.audio_tokens == 4
        assert 1 <= usage.completion_tokens <= 12
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_max_tokens_and_finish_reason(client, model, clips):
    path, data, fmt = clips[0]
    response = client.chat.completions.create(model="tiny-pengi", messages=audio_message(data, PROMPTS[0]),
                                              max_tokens=2)
    assert response.choices[0].message.content == model.generate(path, PROMPTS[0], max_new_tokens=2)[0]
    assert response.usage.completion_tokens <= 2
    if response.usage.completion_tokens == 2:
        assert response.choices[0].finish_reason == "length"
    response = client.chat.completions.create(model="tiny-pengi", messages=audio_message(data, PROMPTS[0]),
                                              max_completion_tokens=3)
    assert response.choices[0].message.content == model.generate(path, PROMPTS[0], max_new_tokens=3)[0]


def test_data_urls_and_the_multi_turn_rule(server, model, clips):
    (path0, data0, _), (path1, data1, _) = clips[0], clips[1]
    url = "data:audio/flac;base64," + b64(data1)
    body = {"model": "tiny-pengi", "messages": [{"role": "user", "content": [
        {"type": "text", "text": PROMPTS[2]}, {"type": "audio_url", "audio_url": {"url": url}}]}]}
    out = post(server, "/v1/chat/completions", json=body).json()
    assert out["choices"][0]["message"]["content"] == model.generate(path1, PROMPTS[2])[0]
    assert "warnings" not in out

    # A conversation: the prompt is the last user message's text, the clip the last audio of the conversation.
    conversation = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "text", "text": PROMPTS[0]},
                                     {"type": "input_audio", "input_audio": {"data": b64(data0), "format": "wav"}}]},
        {"role": "assistant", "content": "a sound"},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": b64(data1), "format": "flac"}},
                                     {"type": "text", "text": PROMPTS[1]}]},
    ]
    out = post(server, "/v1/chat/completions", json={"messages": conversation}).json()
    assert out["choices"][0]["message"]["content"] == model.generate(path1, PROMPTS[1])[0]
    assert any("last user message" in w and "messages[3]" in w for w in out["warnings"]), out

    # A follow-up question without audio is about the last clip of the conversation.
    follow_up = conversation[:2] + [{"role": "assistant", "content": "a sound"},
                                    {"role": "user", "content": PROMPTS[3]}]
    out = post(server, "/v1/chat/completions", json={"messages": follow_up}).json()
    assert out["choices"][0]["message"]["content"] == model.generate(path0, PROMPTS[3])[0]
    assert any("messages[1].content[1]" in w for w in out["warnings"]), out


def test_streaming_with_the_openai_client_equals_the_answer(client, model, clips):
    for path, data, fmt in clips[:3]:
        expected = model.generate(path, PROMPTS[0])[0]
        stream = client.chat.completions.create(model="tiny-pengi", messages=audio_message(data, PROMPTS[0], fmt),
                                                stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == expected
        assert chunks[0].choices[0].delta.role == "assistant"
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish in (["stop"], ["length"])
        assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 8
    # n copies of a deterministic answer, streamed
    stream = client.chat.completions.create(model="tiny-pengi", messages=audio_message(clips[0][1]), stream=True, n=2)
    texts = ["", ""]
    for c in stream:
        for choice in c.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == [model.generate(clips[0][0], PROMPTS[0])[0]] * 2


def test_a_stream_whose_client_goes_away(server, client, model, clips):
    """A client that closes the stream after its first event: the server stops that generation and goes on."""
    for _ in range(3):
        with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=60,
                          json={"messages": audio_message(clips[1][1], PROMPTS[0], "flac"), "stream": True,
                                "temperature": 1.0, "max_tokens": 12}) as r:
            first = next(r.iter_lines())
        assert first.startswith("data: ")
    response = client.chat.completions.create(model="tiny-pengi", messages=audio_message(clips[0][1]))
    assert response.choices[0].message.content == model.generate(clips[0][0], PROMPTS[0])[0]
    time.sleep(0.5)
    assert "never retrieved" not in server.log() and "Traceback" not in server.log()


def test_sampling_with_a_seed_is_repeatable(client, clips):
    messages = audio_message(clips[2][1], PROMPTS[0], "ogg")

    def sample(**kwargs):
        return client.chat.completions.create(model="tiny-pengi", messages=messages, temperature=1.5, seed=1234,
                                              **kwargs)

    first, second = sample(), sample()
    assert first.choices[0].message.content == second.choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in sample(stream=True) if c.choices)
    assert streamed == first.choices[0].message.content
    several = sample(n=3)
    assert len(several.choices) == 3 and [c.index for c in several.choices] == [0, 1, 2]
    assert [c.message.content for c in several.choices] == [c.message.content for c in sample(n=3).choices]
    texts = {client.chat.completions.create(model="tiny-pengi", messages=messages, temperature=1.5, seed=s)
             .choices[0].message.content for s in range(4)}
    assert len(texts) > 1  # different seeds, different samples (random tiny model: nearly flat logits)
    greedy = client.chat.completions.create(model="tiny-pengi", messages=messages, n=2)
    assert greedy.choices[0].message.content == greedy.choices[1].message.content


# ----------------------------------------------------------------------------- /v1/generate
def test_generate_multipart_json_options_and_windows(server, model, clips, tmp_path):
    paths = [p for p, _, _ in clips[:4]]
    files = [("file", (os.path.basename(p), d, "application/octet-stream")) for p, d, _ in clips[:4]]
    out = post(server, "/v1/generate", files=files, data={"prompt": PROMPTS[0]}).json()
    assert [r["text"] for r in out["results"]] == model.generate(paths, PROMPTS[0])
    assert [r["audio"] for r in out["results"]] == [os.path.basename(p) for p in paths]
    assert out["object"] == "pengi.generation" and out["usage"]["clips"] == 4

    # one prompt per file, and generate's options (beam search, several sequences, scores)
    data = {"prompt": PROMPTS, "num_beams": "3", "num_return_sequences": "2", "return_scores": "true",
            "max_new_tokens": "6"}
    out = post(server, "/v1/generate", files=files, data=data).json()
    expected = model.generate(paths, PROMPTS, num_beams=3, num_return_sequences=2, max_new_tokens=6,
                              return_scores=True)
    assert [r["texts"] for r in out["results"]] == [[t for t, _ in e] for e in expected]
    for r, e in zip(out["results"], expected):
        assert r["scores"] == pytest.approx([s for _, s in e], abs=1e-4)

    # JSON with base64, and windows over a long recording
    sr = 16000
    long = np.concatenate([example(s).audio for s in range(3)] + [example(4).audio[:8000]])
    long_path = tmp_path / "long.flac"
    sf.write(long_path, long, sr)
    body = {"audio": [{"data": b64(long_path.read_bytes()), "format": "flac", "name": "long.flac"}],
            "prompt": PROMPTS[0], "windows": True}
    out = post(server, "/v1/generate", json=body).json()
    windows = out["results"][0]["windows"]
    expected = model.generate_windows(str(long_path), PROMPTS[0])[0]
    assert [(w["start"], w["end"], w["text"]) for w in windows] == [(e["start"], e["end"], e["text"]) for e in expected]
    assert len(windows) == 4 and windows[-1]["end"] == 3.5
    body.update(hop_seconds=0.5)
    out = post(server, "/v1/generate", json=body).json()
    expected = model.generate_windows(str(long_path), PROMPTS[0], hop_seconds=0.5)[0]
    assert [w["text"] for w in out["results"][0]["windows"]] == [e["text"] for e in expected]

    # a long clip without windows is cropped, and the response says so
    out = post(server, "/v1/generate", json={"audio": b64(long_path.read_bytes()), "prompt": PROMPTS[0]}).json()
    assert out["results"][0]["text"] == model.generate(str(long_path), PROMPTS[0])[0]
    assert any("windows=true" in w for w in out["warnings"])


# ----------------------------------------------------------------------------- batching
def test_a_burst_is_batched_and_every_answer_is_right(server, model, clips):
    before = batch_histogram(httpx.get(server.url + "/metrics").text)
    jobs = [(i % 3, PROMPTS[i % 2], 3 if i % 8 == 0 else None) for i in range(40)]
    expected = {}
    for clip, prompt, beams in set(jobs):
        kwargs = {"num_beams": beams} if beams else {}
        expected[clip, prompt, beams] = model.generate(clips[clip][0], prompt, **kwargs)[0]

    async def burst():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            async def one(clip, prompt, beams):
                path, data, fmt = clips[clip]
                if beams:  # beam search through pengi's own endpoint: another decoding setting, another batch
                    r = await http.post("/v1/generate", json={"audio": {"data": b64(data), "format": fmt},
                                                              "prompt": prompt, "num_beams": beams})
                    return r.json()["results"][0]["text"]
                r = await http.post("/v1/chat/completions", json={"model": "tiny-pengi",
                                                                  "messages": audio_message(data, prompt, fmt)})
                return r.json()["choices"][0]["message"]["content"]
            return await asyncio.gather(*(one(*job) for job in jobs))

    answers = asyncio.run(burst())
    assert answers == [expected[job] for job in jobs]  # every request answered, each as if served alone
    buckets, count, total = batch_histogram(httpx.get(server.url + "/metrics").text)
    batches, clips_batched = count - before[1], total - before[2]
    assert clips_batched == len(jobs)
    assert batches < len(jobs) / 2, (batches, buckets)  # many clips per batch
    singles = buckets[1.0] - before[0][1.0]
    assert singles < batches, buckets


def test_bad_requests_in_a_burst_fail_alone(server, model, clips):
    path, data, fmt = clips[0]
    expected = model.generate(path, PROMPTS[0])[0]
    good = {"model": "tiny-pengi", "messages": audio_message(data, PROMPTS[0])}
    nan = encode(np.full(16000, np.nan, dtype=np.float32), 16000, "wav", "FLOAT")
    bad = [{"model": "tiny-pengi", "messages": audio_message(b"not audio at all")},
           {"model": "tiny-pengi", "messages": audio_message(nan)},
           {"model": "tiny-pengi", "messages": audio_message(data, "  ")}]

    async def burst():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            bodies = [bad[i % 3] if i % 4 == 1 else good for i in range(24)]
            return await asyncio.gather(*(http.post("/v1/chat/completions", json=b) for b in bodies))

    responses = asyncio.run(burst())
    for i, r in enumerate(responses):
        if i % 4 == 1:
            error_of(r, 400)
        else:
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == expected


# ----------------------------------------------------------------------------- bad input
def _wav(seconds: float, sr: int = 16000, channels: int = 1, subtype: str = "PCM_16") -> bytes:
    return encode(tone(440, seconds, sr, channels=channels), sr, "wav", subtype)


def _chat(data=None, prompt="generate audio caption", fmt="wav", **extra):
    part = {"type": "input_audio", "input_audio": {"data": data if isinstance(data, str) else b64(data),
                                                   "format": fmt}}
    content = ([{"type": "text", "text": prompt}] if prompt is not None else []) + [part]
    return {"json": {"model": "tiny-pengi", "messages": [{"role": "user", "content": content}], **extra}}


ONE_SECOND = None  # filled lazily: the bytes of a valid 1 s wav


def bad_cases():
    ok = _wav(1.0)
    long_ogg = encode(tone(440, MAX_AUDIO_SECONDS + 10, 16000) * 0.1, 16000, "ogg")
    big = _wav(11.0, sr=48000, channels=2)  # about 2 MB: over --max-audio-mb 1
    zero = encode(np.zeros((0,), dtype=np.float32), 16000, "wav")
    nan = encode(np.array([0.1, np.nan, 0.2] * 4000, dtype=np.float32), 16000, "wav", "FLOAT")
    return {
        "not audio": ("/v1/chat/completions", _chat(b"hello, this is a text file and not audio\n" * 10), 400,
                      "invalid_audio", ["cannot decode"]),
        "corrupt base64": ("/v1/chat/completions", _chat("@@not*base64!!"), 400, "invalid_base64", ["base64"]),
        "truncated wav": ("/v1/chat/completions", _chat(ok[:30]), 400, "invalid_audio", ["cannot decode"]),
        "empty audio": ("/v1/chat/completions", _chat(""), 400, "empty_audio", ["empty"]),
        "zero-length audio": ("/v1/chat/completions", _chat(zero), 400, "empty_audio", ["zero length"]),
        "NaN samples": ("/v1/chat/completions", _chat(nan), 400, "invalid_audio_samples", ["NaN"]),
        "audio over --max-audio-mb": ("/v1/generate", {"files": {"file": ("big.wav", big)},
                                                       "data": {"prompt": "generate audio caption"}},
                                      413, "audio_too_large", ["big.wav", "over the limit of 1 MB"]),
        "body over the limit": ("/v1/chat/completions", _chat(big), 413, "request_too_large", ["larger than"]),
        "audio over --max-audio-seconds": ("/v1/chat/completions", _chat(long_ogg, fmt="ogg"), 400,
                                           "audio_too_long", [f"over the limit of {MAX_AUDIO_SECONDS} s"]),
        "malformed JSON": ("/v1/chat/completions", {"content": b'{"model": "tiny-pengi", "messages": [',
                                                    "headers": {"content-type": "application/json"}},
                           400, "invalid_json", ["malformed JSON"]),
        "JSON that is not an object": ("/v1/chat/completions", {"json": [1, 2]}, 400, "invalid_json", ["object"]),
        "unknown model": ("/v1/chat/completions", {"json": {**_chat(ok)["json"], "model": "gpt-4o"}}, 404,
                          "model_not_found", ["gpt-4o", "tiny-pengi"]),
        "missing prompt": ("/v1/chat/completions", _chat(ok, prompt=None), 400, "missing_prompt", ["prompt"]),
        "blank prompt": ("/v1/chat/completions", _chat(ok, prompt="   "), 400, "missing_prompt", ["prompt"]),
        "no audio": ("/v1/chat/completions", {"json": {"messages": [{"role": "user", "content": "hi"}]}}, 400,
                     "missing_audio", ["no audio"]),
        "no messages": ("/v1/chat/completions", {"json": {"model": "tiny-pengi"}}, 400, "missing_parameter",
                        ["messages"]),
        "two clips in one message": ("/v1/chat/completions", {"json": {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "caption"},
            {"type": "input_audio", "input_audio": {"data": b64(ok), "format": "wav"}},
            {"type": "input_audio", "input_audio": {"data": b64(ok), "format": "wav"}}]}]}}, 400,
            "too_many_audio_parts", ["one clip per request"]),
        "an image part": ("/v1/chat/completions", {"json": {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}}, 400,
            "unsupported_content", ["image_url"]),
        "webm audio": ("/v1/chat/completions", _chat(ok, fmt="webm"), 400, "unsupported_format", ["webm"]),
        "unknown format": ("/v1/chat/completions", _chat(ok, fmt="xyz"), 400, "unsupported_format", ["xyz"]),
        "remote URL": ("/v1/chat/completions", {"json": {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "caption"},
            {"type": "audio_url", "audio_url": {"url": "https://example.com/a.wav"}}]}]}}, 400,
            "remote_audio_disabled", ["--allow-remote-audio"]),
        "max_tokens too large": ("/v1/chat/completions", _chat(ok, max_tokens=100000), 400, "invalid_value",
                                 ["max_tokens"]),
        "temperature out of range": ("/v1/chat/completions", _chat(ok, temperature=7), 400, "invalid_value",
                                     ["temperature"]),
        "n not an integer": ("/v1/chat/completions", _chat(ok, n="three"), 400, "invalid_value", ["n:"]),
        "tools": ("/v1/chat/completions", _chat(ok, tools=[{"type": "function", "function": {"name": "f"}}]), 400,
                  "unsupported_parameter", ["tools"]),
        "wrong content type": ("/v1/chat/completions", {"content": b"hello", "headers": {"content-type":
                                                                                         "text/plain"}},
                               415, "unsupported_media_type", ["text/plain"]),
        "generate without a file": ("/v1/generate", {"data": {"prompt": "generate audio caption"},
                                                     "files": {"other": ("x.txt", b"x")}}, 400, None, ["other"]),
        "generate with no audio": ("/v1/generate", {"json": {"prompt": "generate audio caption"}}, 400,
                                   "missing_audio", ["no audio"]),
        "generate without a prompt": ("/v1/generate", {"files": {"file": ("a.wav", ok)}}, 400, "missing_prompt",
                                      ["prompt"]),
        "generate with too many prompts": ("/v1/generate", {"json": {"audio": [b64(ok)] * 2, "prompt": ["a"] * 3}},
                                           400, "invalid_value", ["3 prompts for 2 audio"]),
        "generate with a misspelt option": ("/v1/generate", {"json": {"audio": b64(ok), "prompt": "a", "beams": 3}},
                                            400, "unknown_parameter", ["beams"]),
        "generate with a bad option value": ("/v1/generate", {"files": {"file": ("a.wav", ok)},
                                                              "data": {"prompt": "a", "num_beams": "many"}},
                                             400, "invalid_value", ["num_beams"]),
        "greedy with several sequences": ("/v1/generate", {"json": {"audio": b64(ok), "prompt": "a",
                                                                    "num_return_sequences": 2}},
                                          400, "invalid_value", ["num_return_sequences"]),
        "an upload of an mp4": ("/v1/generate", {"files": {"file": ("a.m4a", b"....ftypM4A ")},
                                                 "data": {"prompt": "a"}}, 400, "unsupported_format", ["m4a"]),
        "CLAP endpoint on a Pengi model": ("/v1/embeddings", {"json": {"input": "a dog"}}, 400, "wrong_model_kind",
                                           ["CLAP"]),
        "no such endpoint": ("/v1/completions", {"json": {}}, 404, "not_found", ["/v1/completions"]),
    }


BAD = bad_cases()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_4xx_in_openai_schema(server, case):
    path, kwargs, status, code, words = BAD[case]
    error_of(post(server, path, **kwargs), status, code, words)


def test_the_server_goes_on_after_bad_input(server, client, model, clips):
    """After every bad input above, the server still answers (and reported them by kind in /metrics)."""
    for path, kwargs, *_ in BAD.values():
        post(server, path, **kwargs)
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    response = client.chat.completions.create(model="tiny-pengi", messages=audio_message(clips[0][1]))
    assert response.choices[0].message.content == model.generate(clips[0][0], PROMPTS[0])[0]
    errors = metric_samples(httpx.get(server.url + "/metrics").text, "pengi_errors_total")
    assert any('code="invalid_base64"' in k for k in errors) and any('code="model_not_found"' in k for k in errors)
    statuses = metric_samples(httpx.get(server.url + "/metrics").text, "pengi_requests_total")
    assert not any('status="500"' in k for k in statuses), statuses
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="whisper-1", messages=audio_message(clips[0][1]))
    assert err.value.code == "model_not_found"


# ----------------------------------------------------------------------------- CLAP models
@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory, gpt2_tokenizer):
    folder = tmp_path_factory.mktemp("clap") / "tiny-clap"
    make_clap(gpt2_tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clap_server(clap_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("clap_logs") / "server.log"
    proc = ServerProcess("--model", clap_dir, "--api-key", "sesame", "--allow-remote-audio",
                         log_path=str(log)).start()
    yield proc
    proc.stop()  # test_the_server_exits_when_its_model_process_dies has ended it (status 1)


@pytest.fixture(scope="module")
def audio_host(clips):
    """A plain HTTP server on this machine serving the clips, for audio_url with --allow-remote-audio."""
    folder = os.path.dirname(clips[0][0])

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=folder, **k)

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_clap_embeddings_and_classification(clap_server, clap_dir, clips, audio_host):
    model = CLAP.from_pretrained(clap_dir).eval()
    auth = {"Authorization": "Bearer sesame"}
    client = openai.OpenAI(base_url=clap_server.url + "/v1", api_key="sesame", max_retries=0)
    texts = ["a dog barking", "rain on a roof", "a siren"]

    # text embeddings with the openai client (it asks for base64 unless told otherwise)
    for fmt in (openai.NOT_GIVEN, "float"):
        out = client.embeddings.create(model="tiny-clap", input=texts, encoding_format=fmt)
        got = np.array([d.embedding for d in out.data])
        assert np.allclose(got, model.embed_text(texts).numpy(), atol=1e-5)
        assert out.usage.prompt_tokens > 0
    # audio embeddings: base64 parts, a remote URL, and multipart files
    parts = [{"type": "input_audio", "input_audio": {"data": b64(d), "format": f}} for _, d, f in clips[:3]]
    parts.append({"type": "audio_url", "audio_url": {"url": f"{audio_host}/{os.path.basename(clips[3][0])}"}})
    out = httpx.post(clap_server.url + "/v1/embeddings", headers=auth, json={"input": parts + ["a dog barking"]}).json()
    got = np.array([d["embedding"] for d in out["data"]])
    expected = model.embed_audio([p for p, _, _ in clips[:4]]).numpy()
    assert np.allclose(got[:4], expected, atol=1e-5)
    assert np.allclose(got[4], model.embed_text(["a dog barking"]).numpy()[0], atol=1e-5)
    files = [("file", (os.path.basename(p), d)) for p, d, _ in clips[:2]]
    out = httpx.post(clap_server.url + "/v1/embeddings", headers=auth, files=files).json()
    assert np.allclose(np.array([d["embedding"] for d in out["data"]]), expected[:2], atol=1e-5)

    # zero-shot classification, JSON and multipart
    body = {"audio": [b64(d) for _, d, _ in clips[:3]], "labels": texts, "multi_label": False}
    out = httpx.post(clap_server.url + "/v1/audio/classifications", headers=auth, json=body).json()
    probs = model.zero_shot([p for p, _, _ in clips[:3]], texts).numpy()
    for row, item in zip(probs, out["data"]):
        assert item["label"] == texts[int(row.argmax())]
        assert item["scores"] == pytest.approx(sorted(row.tolist(), reverse=True), abs=1e-5)
    out = httpx.post(clap_server.url + "/v1/audio/classifications", headers=auth, files=files,
                     data={"labels": "dog, rain", "template": "the sound of {label}", "multi_label": "true",
                           "top_k": "1"}).json()
    probs = model.zero_shot([p for p, _, _ in clips[:2]], ["dog", "rain"], "the sound of {label}", True).numpy()
    assert [d["score"] for d in out["data"]] == pytest.approx(probs.max(1).tolist(), abs=1e-5)
    assert all(len(d["labels"]) == 1 for d in out["data"])

    # what a CLAP server refuses
    error_of(httpx.post(clap_server.url + "/v1/embeddings", json={"input": "x"}), 401, "invalid_api_key")
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny-clap", messages=audio_message(clips[0][1]))
    assert "CLAP" in err.value.message and "/v1/audio/classifications" in err.value.message
    error_of(httpx.post(clap_server.url + "/v1/audio/classifications", headers=auth,
                        json={"audio": b64(clips[0][1]), "labels": ["a"], "template": "no placeholder"}),
             400, None, ["{label}"])
    error_of(httpx.post(clap_server.url + "/v1/audio/classifications", headers=auth,
                        json={"audio": b64(clips[0][1])}), 400, "missing_parameter", ["labels"])
    error_of(httpx.post(clap_server.url + "/v1/embeddings", headers=auth,
                        json={"input": [{"type": "audio_url", "audio_url": {"url": audio_host + "/missing.wav"}}]}),
             400, "audio_url_unreachable", ["404"])


def test_the_server_exits_when_its_model_process_dies(clap_server):
    """A supervisor should restart a server whose model is gone: pending work fails with a 5xx, the server exits 1."""
    auth = {"Authorization": "Bearer sesame"}
    model_pid = httpx.get(clap_server.url + "/health").json()["model_pid"]
    assert model_pid and model_pid != clap_server.proc.pid
    os.kill(model_pid, signal.SIGKILL)
    try:
        r = httpx.post(clap_server.url + "/v1/embeddings", headers=auth, json={"input": "a dog"}, timeout=30)
        assert r.status_code in (500, 503) and r.json()["error"]["code"] == "model_process_died"
    except httpx.TransportError:
        pass  # already shutting down
    assert clap_server.proc.wait(60) == 1
    log = clap_server.log()
    assert "the model process exited unexpectedly" in log and "Traceback" not in log, log


# ----------------------------------------------------------------------------- the command line
def test_serve_refuses_bad_options_and_unservable_models(tmp_path, caplog, capfd):
    from pengi.cli import main

    def serve(*args):  # in this process; each fails before serving anything (argparse's errors exit with 2)
        caplog.clear()
        try:
            return main(["serve", *map(str, args)])
        except SystemExit as exit_:
            return exit_.code

    def said() -> str:
        return capfd.readouterr().err + caplog.text

    assert serve("--max-batch-size", "0") == 2 and "--max-batch-size: must be at least 1, got 0" in said()
    assert serve("--max-audio-mb", "0") == 2 and "--max-audio-mb: must be greater than 0" in said()
    assert serve("--threads", "0") == 2 and "--threads/--torch-threads: must be at least 1" in said()
    assert serve("--torch-threads", "0") == 2 and "--threads/--torch-threads: must be at least 1" in said()
    assert serve("--port", "70000") == 2 and "--port: must be a port number" in said()
    assert serve("--max-wait-ms", "-1") == 2 and "--max-wait-ms: must be at least 0" in said()
    assert serve("--max-audio-mb", "2", "--max-request-mb", "1") == 2 and \
        "--max-request-mb must be at least --max-audio-mb" in said()
    assert serve("--device", "gpu7") == 2 and "--device:" in said()
    assert serve("--model", tmp_path / "nowhere") == 2 and "no such model folder" in said()
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert serve("--model", bad, "--port", "0") == 1  # uvicorn starts, the lifespan refuses the model
    err = said()  # uvicorn's own log
    assert "cannot load the model" in err and "'bert'" in err
    assert "Traceback" not in err


def test_serve_threads_option_and_its_old_name():
    """--threads is the model's torch threads, as for the other commands; --torch-threads, its first name, still
    works; left out, the server takes the cores less one (one is left to the process that reads requests)."""
    from pengi.cli import build_parser
    from pengi.cli.common import available_cores
    from pengi.cli.serve import settings_from

    def settings(*args):
        return settings_from(build_parser().parse_args(["serve", *args]))

    assert settings("--threads", "3").threads == 3 and settings("--torch-threads", "2").threads == 2
    assert settings().threads == max(1, available_cores() - 1)
    assert settings("--quiet").log_level == "warning" and settings("--dtype", "bfloat16").dtype == "bfloat16"


def test_base64_with_newlines_and_urlsafe_alphabet_is_accepted(server, model, clips):
    path, data, _ = clips[0]
    wrapped = "\n".join(b64(data)[i:i + 76] for i in range(0, len(b64(data)), 76))
    out = post(server, "/v1/generate", json={"audio": wrapped, "prompt": PROMPTS[0]}).json()
    assert out["results"][0]["text"] == model.generate(path, PROMPTS[0])[0]
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    out = post(server, "/v1/generate", json={"audio": urlsafe, "prompt": PROMPTS[0]}).json()
    assert out["results"][0]["text"] == model.generate(path, PROMPTS[0])[0]


# ----------------------------------------------------------------------------- SIGTERM
def test_sigterm_finishes_the_requests_in_flight(server, model, clips, tmp_path):
    """Requests in flight when SIGTERM comes (clips in the queue, a stream in progress, a long recording in windows)
    are all answered; new connections are refused; the process exits 0. This stops the module's server, so it is
    the module's last test. Long answers (64 tokens: the random tiny model rarely stops early) and 60 windows keep
    the six requests in flight for a while."""
    recording = tmp_path / "long.ogg"  # 60 s in under --max-audio-mb
    sf.write(recording, np.concatenate([example(s % 8).audio for s in range(60)]), 16000, format="OGG",
             subtype="VORBIS")
    long_answers = 64
    proc = server
    try:
        def ask(i):
            path, data, fmt = clips[i]
            r = httpx.post(proc.url + "/v1/chat/completions", timeout=120,
                           json={"messages": audio_message(data, PROMPTS[i % 4], fmt), "max_tokens": long_answers})
            return r.status_code, r.json()["choices"][0]["message"]["content"]

        def stream():
            with httpx.stream("POST", proc.url + "/v1/chat/completions", timeout=120,
                              json={"messages": audio_message(clips[0][1]), "stream": True,
                                    "max_tokens": long_answers}) as r:
                lines = [line for line in r.iter_lines() if line.startswith("data: ")]
            deltas = [json.loads(line[6:]) for line in lines[:-1]]
            return lines[-1], "".join(d["choices"][0]["delta"].get("content") or "" for d in deltas if d["choices"])

        def windows():
            r = httpx.post(proc.url + "/v1/generate", timeout=120, files={"file": ("long.ogg", recording.read_bytes())},
                           data={"prompt": PROMPTS[0], "windows": "true", "max_new_tokens": str(long_answers)})
            return r.status_code, [w["text"] for w in r.json()["results"][0]["windows"]]

        with ThreadPoolExecutor(6) as pool:
            long_one = pool.submit(windows)
            answers = [pool.submit(ask, i) for i in range(4)]
            streamed = pool.submit(stream)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # wait until all six are in the server (this request is the 7th)
                in_flight = metric_samples(httpx.get(proc.url + "/metrics").text, "pengi_requests_in_flight")[""]
                if in_flight >= 7:
                    break
                time.sleep(0.02)
            assert in_flight >= 7
            proc.terminate()
            time.sleep(0.3)
            with pytest.raises(httpx.TransportError):
                httpx.get(proc.url + "/health", timeout=5)
            results = [f.result(timeout=120) for f in answers]
            last, text = streamed.result(timeout=120)
            status, texts = long_one.result(timeout=120)
        long = {"max_new_tokens": long_answers}
        assert results == [(200, model.generate(clips[i][0], PROMPTS[i % 4], **long)[0]) for i in range(4)]
        assert last == "data: [DONE]" and text == model.generate(clips[0][0], PROMPTS[0], **long)[0]
        expected = model.generate_windows(str(recording), PROMPTS[0], **long)[0]
        assert status == 200 and texts == [w["text"] for w in expected]
        assert proc.proc.wait(60) == 0
    finally:
        proc.stop()
    assert "Finished server process" in proc.log() and "Traceback" not in proc.log(), proc.log()
