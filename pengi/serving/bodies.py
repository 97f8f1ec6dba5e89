"""Request bodies: JSON (parsed off the event loop when large) or multipart/urlencoded forms (uploads checked against
the audio size limit as they are read), as one `Body`, and the ``model`` a request names."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .audio_input import AudioRef, check_size
from .errors import APIError, bad_request
from .native_api import FILE_FIELDS, MAX_INPUTS, Body, format_from_name
from .openai_api import json_kind, model_field
from .server import Server

JSON_IN_POOL_BYTES = 1 << 20  # bodies above this are parsed in the decode pool, off the event loop


async def read_request(request: Request, server: Server) -> tuple[Body, str]:
    """The body, and the name of the served model (a request for another model gets 404, whatever else it holds)."""
    body = await read_body(request, server)
    return body, server.check_model(requested_model(body))


async def read_body(request: Request, server: Server) -> Body:
    """JSON (checked to be an object) or a multipart/urlencoded form (uploaded files checked against the limit)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return await read_form(request, server)
    if ctype not in ("", "application/json", "text/json") and not ctype.endswith("+json"):
        raise APIError(f"unsupported content type {ctype!r}; send application/json or multipart/form-data",
                       status=415, code="unsupported_media_type")
    raw = await request.body()
    if not raw.strip():
        raise bad_request("the request body is empty; send a JSON object", None, "invalid_json")
    try:
        if len(raw) > JSON_IN_POOL_BYTES:
            obj = await asyncio.get_running_loop().run_in_executor(server.decode_pool, json.loads, raw)
        else:
            obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise bad_request(f"malformed JSON body: {err}", None, "invalid_json") from None
    if not isinstance(obj, dict):
        raise bad_request(f"the request body must be a JSON object, got {json_kind(obj)}", None, "invalid_json")
    return Body(obj)


async def read_form(request: Request, server: Server) -> Body:
    try:
        form = await request.form(max_files=MAX_INPUTS, max_fields=MAX_INPUTS + 100)
    except StarletteHTTPException as err:  # malformed multipart
        raise bad_request(f"malformed form body: {err.detail}", None, "invalid_form") from None
    values: dict[str, list[Any]] = {}
    uploads: list[tuple[str, UploadFile]] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key not in FILE_FIELDS:
                raise bad_request(f"{key}: unexpected file field; upload audio files as 'file'", key)
            uploads.append((key, value))
        else:
            values.setdefault(key, []).append(value)
    files = []
    try:
        for i, (key, upload) in enumerate(uploads):
            param = f"{key}[{i}]" if len(uploads) > 1 else key
            label = f"{param} ({upload.filename})" if upload.filename else param
            if upload.size is not None:
                check_size(upload.size, server.limits, label, param)
            fmt = format_from_name(upload.filename, upload.content_type, param)
            data = await upload.read()
            files.append(AudioRef(param, "bytes", data, fmt, upload.filename or None))
    finally:
        await form.close()
    return Body(values, files, is_form=True)


def requested_model(body: Body) -> str | None:
    """The body's ``model``, checked first so that a request for another model gets 404 whatever else is in it."""
    return model_field(body.get("model"))
