"""API errors and the one error body every 4xx/5xx carries: ``{"error": {"code", "message"}}``.

Services raise ``ApiError`` subclasses; the handlers installed here turn those, FastAPI's own
validation errors, Starlette's 404/405 and anything unexpected into that body, so a client never
has to parse a second error shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("cargotrace.api")


class ApiError(Exception):
    """An error with its HTTP status and stable ``code``; the message is shown to the client."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class BadRequestError(ApiError):
    """A malformed header or parameter that is not a field of the request body."""

    status, code = 400, "bad_request"


class BadCursorError(ApiError):
    status, code = 400, "bad_cursor"


class UnauthorizedError(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, {"WWW-Authenticate": "Bearer"})


class ForbiddenError(ApiError):
    status, code = 403, "forbidden"


class NotFoundError(ApiError):
    status, code = 404, "not_found"


class ConflictError(ApiError):
    status, code = 409, "conflict"


class InvalidInputError(ApiError):
    status, code = 422, "validation_error"


class InvalidReferenceError(ApiError):
    """A code in the body names something that does not exist or is of the wrong type."""

    status, code = 422, "invalid_reference"


class TooManyRequestsError(ApiError):
    status, code = 429, "too_many_requests"


class ServiceUnavailableError(ApiError):
    status, code = 503, "db_unavailable"


class BrokerUnavailableError(ApiError):
    status, code = 503, "broker_unavailable"


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=dict(headers or {}))


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "service_unavailable",
}


def _field_name(loc: Sequence[Any]) -> str:
    """``('body', 'lines', 0, 'qty')`` → ``lines[0].qty``; query/path params say what they are."""
    if not loc:
        return "request"
    where, rest = str(loc[0]), list(loc[1:])
    path = ""
    for part in rest:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    if where == "body":
        return path or "request body"
    if where in ("query", "path", "header"):
        return f"{where} parameter {path!r}" if path else where
    return ".".join(str(p) for p in loc)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        msg = str(err.get("msg", "invalid"))
        # Pydantic prefixes messages from our validators; the field name says enough.
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        parts.append(f"{_field_name(err.get('loc', ()))}: {msg}")
    return "; ".join(parts) or "invalid request"


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "internal_error" if exc.status_code >= 500 else "bad_request")
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no such resource: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, code, message, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "validation_error", _validation_message(exc))


async def _unstorable_value(request: Request, exc: Exception) -> JSONResponse:
    # A value that passed validation but PostgreSQL cannot store or compare (a NUL character, a
    # number beyond the column's range, a date out of range): the client's input, so 422, not 500.
    # The failing statement's transaction has rolled back; nothing was half-written.
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return error_response(422, "validation_error", f"a value in the request cannot be stored: {reason}")


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # Connection lost, pool exhausted or server down: the client may retry, so 503, not 500.
    log.warning("database unavailable for %s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "db_unavailable", "the database is unavailable; retry later")


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    # Logged with its traceback here; the client gets no internals.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(psycopg.OperationalError, _database_error)
    app.add_exception_handler(psycopg.DataError, _unstorable_value)
    app.add_exception_handler(Exception, _unhandled)
