"""The one place where the gateway's errors become HTTP answers (DESIGN.md §7).

Every error body is `{"error": {"code": <pm.domain.intent.ErrorCode>, "message": "..."}}`:

    ApiError(status, code, message)   raised by views and middlewares for what a caller got wrong
    web.HTTPException                 raised by aiohttp itself (no route: 404, body too large: 413, ...)
    PostgreSQL / Redis / the ledger   503 UNAVAILABLE with Retry-After: try again shortly. Also when the
      unavailable or dropped the      connection broke mid-request: the request may or may not have been
      connection                      committed, and a retry with the same Idempotency-Key tells (never a
                                      2xx for work that was not committed)
    anything else                     500 INTERNAL, logged with its traceback (a bug)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from pm.config.constants import BACKPRESSURE_RETRY_AFTER_S
from pm.domain.intent import ErrorCode
from pm.redis.wire import redis_unavailable
from pm.store.pool import database_unavailable

log = logging.getLogger("pm.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def dumps(value: Any) -> str:
    """Compact JSON (orjson: a tenth of the standard library's CPU on the request path)."""
    return orjson.dumps(value).decode()


# aiohttp's own refusals, by status, with our code.
_HTTP_EXCEPTION_CODES: dict[int, ErrorCode] = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says a dependency is down or dropped us (PostgreSQL: pm.store.pool; Redis; the
    ledger, whose LedgerUnavailableError is a ConnectionError, so an OSError): 503, not 500."""
    return redis_unavailable(exc) or database_unavailable(exc)


class ApiError(Exception):
    """A refusal with an HTTP status and a stable machine code."""

    def __init__(self, status: int, code: ErrorCode, message: str, headers: Mapping[str, str] | None = None) -> None:
        assert 400 <= status < 600, status
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")


def error_response(
    status: int, code: ErrorCode, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return json_response({"error": {"code": str(code), "message": message}}, status, headers)


def bad_request(message: str) -> ApiError:
    return ApiError(400, ErrorCode.BAD_REQUEST, message)


def validation_failed(message: str, code: ErrorCode = ErrorCode.VALIDATION_FAILED) -> ApiError:
    return ApiError(422, code, message)


def not_found() -> ApiError:
    # One message for "does not exist" and "not yours": the answer must not tell them apart.
    return ApiError(404, ErrorCode.NOT_FOUND, "no such resource")


def overloaded(message: str) -> ApiError:
    return ApiError(503, ErrorCode.OVERLOADED, message, {"Retry-After": str(BACKPRESSURE_RETRY_AFTER_S)})


async def to_error_response(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run `handler`; turn whatever it raises into a JSON error answer."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and successes raised as exceptions are answers, not errors
        code = _HTTP_EXCEPTION_CODES.get(exc.status, ErrorCode.BAD_REQUEST)
        headers = {name: value for name, value in exc.headers.items() if name in ("Allow", "Retry-After")}
        return error_response(exc.status, code, exc.reason, headers)
    except Exception as exc:
        if unavailable(exc):
            log.warning("dependency unavailable", extra={"path": request.path, "error": repr(exc)})
            return error_response(
                503,
                ErrorCode.UNAVAILABLE,
                "a dependency is unavailable; retry shortly",
                {"Retry-After": str(BACKPRESSURE_RETRY_AFTER_S)},
            )
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return error_response(500, ErrorCode.INTERNAL, "internal error")
