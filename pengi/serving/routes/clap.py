"""The CLAP routes: ``POST /v1/audio/classifications`` (zero-shot: audio and labels in, scores out) and
``POST /v1/embeddings`` (OpenAI's embeddings schema, for texts and audio alike). Audio is batched; texts and label
scores are computed in the model process between batches."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from pengi import CLAP

from .. import openai_api as oa
from ..audio_input import AudioRef
from ..bodies import read_request
from ..engine import ClapFront
from ..errors import bad_request
from ..native_api import parse_classify, parse_embeddings
from ..server import Server


def router(server: Server) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/audio/classifications")
    async def classify(request: Request) -> JSONResponse:
        server.authorize(request)
        server.require("clap", "/v1/audio/classifications")
        with server.arrival():
            body, name = await read_request(request, server)
            req = parse_classify(body)
            texts = CLAP.label_texts(req.labels, req.template)
            loaded = await server.load_all(req.audio)
            futures = server.batcher.submit_many(("clap_audio",), [parts[0] for _, parts in loaded])
        embeds = await server.results(futures)
        probs = await server.run_model("classify", embeds, texts, req.multi_label)
        data = []
        for i, ((clip, _), ref, row) in enumerate(zip(loaded, req.audio, probs)):
            order = np.argsort(-row, kind="stable")[:req.top_k]
            labels, scores = [req.labels[j] for j in order], [float(row[j]) for j in order]
            data.append({"index": i, "audio": ref.name or ref.param, "duration": round(clip.seconds, 3),
                         "label": labels[0], "score": scores[0], "labels": labels, "scores": scores})
        return JSONResponse({"object": "list", "model": name, "data": data, "template": req.template,
                             "multi_label": req.multi_label})

    @router.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        server.authorize(request)
        engine: ClapFront = server.require("clap", "/v1/embeddings")
        with server.arrival():
            body, name = await read_request(request, server)
            req = parse_embeddings(body)
            if req.dimensions is not None and req.dimensions != engine.dimensions:
                raise bad_request(f"dimensions: this model's embeddings have {engine.dimensions} dimensions, got "
                                  f"{req.dimensions}", "dimensions")
            texts = [x for x in req.items if isinstance(x, str)]
            refs = [x for x in req.items if isinstance(x, AudioRef)]
            loaded = await server.load_all(refs)
            futures = server.batcher.submit_many(("clap_audio",), [parts[0] for _, parts in loaded]) if refs else []
        audio_embeds = iter(await server.results(futures))
        text_embeds = iter(await server.run_model("embed_texts", texts) if texts else [])
        ordered = [next(text_embeds) if isinstance(x, str) else next(audio_embeds) for x in req.items]
        tokens = engine.count_tokens(texts) if texts else 0
        return JSONResponse({"object": "list", "model": name, "data": oa.embedding_items(ordered, req.encoding_format),
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    return router
