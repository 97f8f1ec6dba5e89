"""OpenAI-style errors: every failure a client sees is ``{"error": {"message", "type", "param", "code"}}``.

Handlers turn `APIError`, FastAPI's request validation errors, Starlette's HTTP errors (404, 405) and
`PengiInputError` into that body with a 4xx status; anything else becomes a 500 whose message names the
exception class (the traceback goes to the server log only), so a bug in one request never shows a
traceback to a client and never stops the server.
"""

from __future__ import annotations

import logging
from typing import Any

from pengi import PengiInputError

log = logging.getLogger("pengi.serving")

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class APIError(Exception):
    """An error with the HTTP status and OpenAI error fields that the client will see."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.type = type or (INVALID_REQUEST if status < 500 else SERVER_ERROR)
        self.headers = headers

    def __reduce__(self):  # picklable, so that the model process can send it
        return (_rebuild, (self.message, self.status, self.param, self.code, self.type, self.headers))

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def __repr__(self) -> str:
        return f"APIError({self.status}, {self.code!r}, {self.message!r})"


def _rebuild(message: str, status: int, param: str | None, code: str | None, type: str, headers: Any) -> APIError:
    return APIError(message, status=status, param=param, code=code, type=type, headers=headers)


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(message, status=400, param=param, code=code)


def from_input_error(err: PengiInputError, param: str | None = None, code: str = "invalid_value",
                     name: str | None = None) -> APIError:
    """A `PengiInputError` (bad audio or prompt found by pengi itself) as a 400 naming the request field."""
    where = name or param or err.source
    return APIError(f"{where}: {err.problem}", status=400, param=param or err.source, code=code)


def internal_error(exc: BaseException) -> APIError:
    return APIError(f"internal server error ({type(exc).__name__}); the server log has the details",
                    status=500, code="internal_error")


def to_api_error(err: BaseException) -> APIError:
    """What a failed call becomes for the client: its own `APIError`, a 400 for bad input found by pengi, else a
    500 whose traceback goes to the server log only."""
    if isinstance(err, APIError):
        return err
    if isinstance(err, PengiInputError):
        return from_input_error(err)
    log.error("model call failed", exc_info=err)
    return internal_error(err)


def install_handlers(app: Any, on_error: Any = None) -> None:
    """Register the handlers on a FastAPI app. ``on_error(request, error)`` is called for every error response
    (the metrics count errors by kind)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def respond(request: Any, err: APIError) -> JSONResponse:
        if on_error is not None:
            on_error(request, err)
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    async def api_error(request, exc: APIError):
        return respond(request, exc)

    async def input_error(request, exc: PengiInputError):
        return respond(request, from_input_error(exc))

    async def validation_error(request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path")]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            return respond(request, bad_request(f"malformed JSON body: {first.get('msg', 'not valid JSON')}",
                                       code="invalid_json"))
        message = first.get("msg", "invalid request")
        return respond(request, bad_request(f"{param}: {message}" if param else message, param))

    async def http_error(request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path} (see GET /v1/models and the README)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return respond(request, APIError(message, status=exc.status_code, code=codes.get(exc.status_code),
                                headers=getattr(exc, "headers", None)))

    async def unexpected(request, exc: Exception):
        log.exception("internal error serving %s %s", request.method, request.url.path, exc_info=exc)
        return respond(request, internal_error(exc))

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(PengiInputError, input_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
