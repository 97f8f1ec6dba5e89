"""``POST /v1/generate``: pengi's own form of generation. Files or base64 clips, a prompt per clip (or one for all),
`Pengi.generate`'s options, and long recordings window by window; each clip (each window) is batched on its own."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .. import openai_api as oa
from ..bodies import read_request
from ..engine import ClipJob, ClipResult, PengiFront
from ..native_api import parse_generate
from ..server import Server


def router(server: Server) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/generate")
    async def generate(request: Request) -> JSONResponse:
        server.authorize(request)
        started = time.perf_counter()
        engine: PengiFront = server.require("pengi", "/v1/generate")
        with server.arrival():
            body, name = await read_request(request, server)
            req = parse_generate(body, max_new_tokens_limit=engine.max_new_tokens_limit,
                                 reads_prompt=engine.reads_prompt)
            engine.processor.check_prompts(req.prompts, names=req.prompt_params)
            warnings = await server.prompt_warnings(req.prompts, req.prompt_params)
            loaded = await server.load_all(req.audio, "windows" if req.windows else "clip", req.hop_seconds)
            jobs = []
            for (clip, parts), ref, prompt in zip(loaded, req.audio, req.prompts):
                if not req.windows:
                    warnings += engine.clip_warnings(clip.seconds, ref.label)
                jobs += [ClipJob(part[2] if req.windows else part, prompt) for part in parts]
            rid = oa.new_id("gen")
            futures = server.batcher.submit_many(req.decoding.batch_key(rid), jobs)
        results: list[ClipResult] = await server.results(futures)
        outputs = iter(results)
        many = req.decoding.num_return_sequences > 1
        scores = req.decoding.return_scores

        def answer(r: ClipResult) -> dict[str, Any]:
            out: dict[str, Any] = {"texts": r.texts} if many else {"text": r.texts[0]}
            out.update({"finish_reasons": r.finish_reasons} if many else {"finish_reason": r.finish_reasons[0]})
            if scores:
                out.update({"scores": r.scores} if many else {"score": r.scores[0]})
            return out

        items = []
        for i, ((clip, parts), ref, prompt) in enumerate(zip(loaded, req.audio, req.prompts)):
            item: dict[str, Any] = {"index": i, "audio": ref.name or ref.param, "prompt": prompt,
                                    "duration": round(clip.seconds, 3)}
            if req.windows:
                item["windows"] = [{"start": round(start, 3), "end": round(end, 3), **answer(next(outputs))}
                                   for start, end, _ in parts]
            else:
                item.update(answer(next(outputs)))
            items.append(item)
        generated = sum(sum(r.completion_tokens) for r in results)
        server.metrics.tokens.inc(generated)
        body_out: dict[str, Any] = {
            "id": rid, "object": "pengi.generation", "created": oa.now(), "model": name, "results": items,
            "usage": {**oa.usage(sum(r.prompt_tokens for r in results), generated), "clips": len(jobs)},
            "timing": {"total_ms": round((time.perf_counter() - started) * 1000, 1)},
        }
        if warnings:
            body_out["warnings"] = warnings
        return JSONResponse(body_out)

    return router
