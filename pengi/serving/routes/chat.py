"""``POST /v1/chat/completions``: OpenAI's chat completions with an audio part (Pengi models). A request's clip is
batched with others; with ``"stream": true`` it runs alone in the model process, between batches, and its tokens
come back as Server-Sent Events in OpenAI's chunk format."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .. import openai_api as oa
from ..bodies import read_body, requested_model
from ..engine import ClipJob, ClipResult, PengiFront
from ..errors import APIError, to_api_error
from ..server import Server

log = logging.getLogger("pengi.serving")


def router(server: Server) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        server.authorize(request)
        engine: PengiFront = server.require("pengi", "/v1/chat/completions")
        with server.arrival():
            body = await read_body(request, server)
            if body.is_form:
                raise APIError("send chat completions as application/json", status=415,
                               code="unsupported_media_type")
            name = server.check_model(requested_model(body))
            req = oa.parse_chat(body.values, max_new_tokens_limit=engine.max_new_tokens_limit,
                                reads_prompt=engine.reads_prompt)
            engine.processor.check_prompts([req.prompt], names=[req.prompt_param])
            req.warnings += await server.prompt_warnings([req.prompt], [req.prompt_param])
            clip, waves = await server.load(req.audio)
            req.warnings += engine.clip_warnings(clip.seconds, req.audio.label)
            job = ClipJob(waves[0], req.prompt)
            rid, created = oa.new_id("chatcmpl"), oa.now()
            key = req.decoding.batch_key(rid)
            if req.stream:
                return start_stream(server, engine, req, job, key, rid, created, name)
            futures = server.batcher.submit_many(key, [job])
        result: ClipResult = (await server.results(futures))[0]
        choices = []
        for text, reason in zip(result.texts, result.finish_reasons):
            text, hit = oa.apply_stop(text, req.stop)
            choices.append((text, "stop" if hit else reason))
        choices *= req.copies
        generated = sum(result.completion_tokens)
        server.metrics.tokens.inc(generated)
        usage = oa.usage(result.prompt_tokens, generated * req.copies, engine.audio_prefix_length)
        return JSONResponse(oa.completion(rid, created, name, choices, usage, req.warnings))

    return router


def start_stream(server: Server, engine: PengiFront, req: oa.ChatRequest, job: ClipJob, key: Any, rid: str,
                 created: int, name: str) -> StreamingResponse:
    queue: asyncio.Queue = asyncio.Queue()
    call_id, future = server.worker.submit("run_stream", key, job, on_tokens=queue.put_nowait)
    future.add_done_callback(lambda _: queue.put_nowait(None))
    return StreamingResponse(stream_chat(server, engine, req, rid, created, name, call_id, future, queue),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def stream_chat(server: Server, engine: PengiFront, req: oa.ChatRequest, rid: str, created: int, name: str,
                      call_id: int, future: asyncio.Future, queue: asyncio.Queue) -> AsyncIterator[str]:
    """Server-Sent Events in OpenAI's chunk format; the model process hands over tokens as it makes them.

    Streamed requests are not batched: each runs alone in the model process, between batches. The text is
    decoded from the tokens so far, holding back trailing spaces, an incomplete UTF-8 character and anything
    that could still become a stop sequence, so the concatenated deltas equal the non-streamed answer.
    """
    rows = req.n if req.decoding.do_sample else 1
    choices_of = [[r] for r in range(rows)] if rows == req.n else [list(range(req.n))]
    hold = max((len(s) for s in req.stop), default=1) - 1
    finished = False

    def delta_chunks(row: int, text: str) -> list[str]:
        return [sse(oa.chunk(rid, created, name, c, {"content": text})) for c in choices_of[row]]

    try:
        for c in range(req.n):
            yield sse(oa.chunk(rid, created, name, c, {"role": "assistant", "content": ""}))
        ids: list[list[int]] = [[] for _ in range(rows)]
        ended, stopped, sent = [False] * rows, [False] * rows, [""] * rows
        while True:
            tokens = await queue.get()
            if tokens is None:
                break
            if len(tokens) != rows:
                continue
            for r, t in enumerate(tokens):
                if not ended[r]:
                    if t in engine.stop_ids:
                        ended[r] = True
                    else:
                        ids[r].append(t)
            for r in range(rows):
                if stopped[r]:
                    continue
                text, hit = oa.apply_stop(engine.decode_tokens(ids[r]).lstrip(), req.stop)
                if hit:
                    stopped[r] = True
                else:
                    text = text.rstrip().rstrip("\ufffd")
                    text = text[:max(len(text) - hold, len(sent[r]))]
                if text.startswith(sent[r]) and len(text) > len(sent[r]):
                    for out in delta_chunks(r, text[len(sent[r]):]):
                        yield out
                    sent[r] = text
        result: ClipResult = await future
        generated = sum(result.completion_tokens)
        server.metrics.tokens.inc(generated)
        for r in range(rows):
            text, hit = oa.apply_stop(result.texts[r], req.stop)
            if text.startswith(sent[r]):
                if len(text) > len(sent[r]):
                    for out in delta_chunks(r, text[len(sent[r]):]):
                        yield out
            else:
                log.warning("streamed text %r is not a prefix of the answer %r", sent[r], text)
            reason = "stop" if hit else result.finish_reasons[r]
            for c in choices_of[r]:
                yield sse(oa.chunk(rid, created, name, c, {}, reason))
        if req.include_usage:
            usage = oa.usage(result.prompt_tokens, generated * req.copies, engine.audio_prefix_length)
            yield sse(oa.chunk(rid, created, name, None, usage_=usage))
        yield "data: [DONE]\n\n"
        finished = True
    except Exception as err:
        finished = True
        err = to_api_error(err)
        server.metrics.errors.labels("/v1/chat/completions", err.code or "internal_error").inc()
        yield sse(err.body())
        yield "data: [DONE]\n\n"
    finally:
        if not finished:
            server.worker.cancel(call_id)  # the client went away: stop generating


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'), ensure_ascii=False)}\n\n"
