"""The edge kit every service shares: one exception-to-Problem mapper, so the same bad input gets the same error body
from the gateway, feature_svc, reward_svc and judge_svc.

A service registers only its own errors: `problem_handler(*mappers)`, where a mapper turns one of the service's
exceptions into a `RequestError` (status, code, field, detail, headers) or returns None for any other. Everything
every service meets is mapped here once: `RequestError` itself, `SessionError` (the session contract), litestar's
parameter validation and HTTP exceptions (one code table, the body limit named on 413), JSON nested too deeply,
and anything else as a logged 500 that says nothing about the request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.exceptions import HTTPException, ValidationException

from tacit.schemas.problem import NESTED_TOO_DEEPLY, RequestError
from tacit.schemas.validate import SessionError

__all__ = ["HTTP_CODES", "ErrorMapper", "healthz", "problem_handler", "to_request_error"]

logger = logging.getLogger("tacit.edge")
_ENCODER = msgspec.json.Encoder()
JSON = "application/json"

#: The one code per HTTP status litestar raises by itself.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    429: "rate_limited",
}

ErrorMapper = Callable[[Exception], RequestError | None]


def _body_limit(request: Request[Any, Any, Any]) -> int | None:
    try:
        limit = request.route_handler.resolve_request_max_body_size()
    except Exception:  # no route (an unknown path)
        return None
    return None if limit is None else int(limit)


def to_request_error(exc: Exception, request: Request[Any, Any, Any]) -> RequestError | None:
    """The errors every service meets, as a RequestError; None for any other exception."""
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, SessionError):
        return RequestError(400 if exc.code == "malformed" else 422, exc.code, exc.field, exc.detail)
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        # A path or query parameter of the wrong type: name it, without echoing the request line.
        first = exc.extra[0] if isinstance(exc.extra[0], dict) else {}
        detail = str(first.get("message", "invalid value"))[:200]
        return RequestError(400, "invalid", str(first.get("key", "$")), detail)
    if isinstance(exc, RecursionError):
        return RequestError(400, "malformed", "$", NESTED_TOO_DEEPLY)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        detail = str(exc.detail)
        if status == 413 and (limit := _body_limit(request)) is not None:  # name the limit (litestar's detail does not)
            detail = f"the request body is over this route's limit of {limit} bytes"
        field = {404: "path", 405: "method"}.get(status, "$")
        return RequestError(status, HTTP_CODES.get(status, "http_error"), field, detail, dict(exc.headers or {}))
    return None


def problem_handler(*mappers: ErrorMapper) -> Callable[[Request[Any, Any, Any], Exception], Response[bytes]]:
    """The exception handler of a service: its own `mappers` first, then the shared ones, else a logged 500."""

    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        error = next((e for m in mappers if (e := m(exc)) is not None), None) or to_request_error(exc, request)
        if error is None:
            logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
            error = RequestError(500, "internal", "$", "internal error")
        return Response(
            _ENCODER.encode(error.problem()), status_code=error.status, media_type=JSON, headers=error.headers
        )

    return handle


@get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process answers (readiness, which checks dependencies, is each service's own `/readyz`)."""
    return {"status": "ok"}
