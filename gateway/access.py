"""Who may call what: the API-key guard of every scoped route, and the JSON answer shared by the route modules.

One guard for the whole gateway (sessions, reward models, alignment jobs, the collector's key routes): the key
is looked up (cached 30 s), rate-limited per key, and its scopes checked against the route's `scope` option.
"""

from __future__ import annotations

import math
import time
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Response
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from gateway.keys import allowed, authenticate
from gateway.limits import RateLimiter
from gateway.openapi import documented
from tacit.schemas.problem import RequestError

__all__ = ["JSON", "json_response", "require_scope", "scoped"]

JSON = "application/json"
_ENCODER = msgspec.json.Encoder()


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(_ENCODER.encode(value), status_code=status, media_type=JSON, headers=headers)


async def require_scope(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Guard: a valid `Authorization: Bearer <key>` whose scopes include the route's `scope` option."""
    header = connection.headers.get("authorization", "")
    if not header.lower().startswith("bearer ") or not header[7:].strip():
        raise RequestError(401, "unauthorized", "authorization", "send an API key as 'Authorization: Bearer <key>'")
    token = header[7:].strip()
    state = connection.app.state
    cached = state.key_cache.get(token)
    now = time.monotonic()
    if cached is None or now - cached[0] > 30:
        key = await anyio.to_thread.run_sync(authenticate, state.store, token)
        cached = (now, None if key is None else (key.id, list(key.scopes)))
        state.key_cache[token] = cached
    if cached[1] is None:
        raise RequestError(401, "unauthorized", "authorization", "unknown or revoked API key")
    key_id, scopes = cached[1]
    limiter: RateLimiter = state.limiter
    wait = limiter.take(key_id)
    if wait > 0:
        raise RequestError(
            429,
            "rate_limited",
            "authorization",
            f"this key is over the rate limit of {limiter.describe()}",
            {"Retry-After": str(math.ceil(wait))},
        )
    needed = handler.opt.get("scope", "admin")
    if not allowed(scopes, needed):
        raise RequestError(403, "forbidden", "authorization", f"this key lacks the '{needed}' scope")


def scoped(scope: str, ok: Any = Any, success: tuple[int, ...] = (200,), media_type: str = JSON) -> dict[str, Any]:
    """Guard and scope of a route, and what it answers (`ok` for the `success` statuses) for the OpenAPI schema."""
    return {
        "guards": [require_scope],
        "opt": {"scope": scope},
        "responses": documented(ok, *success, media_type=media_type),
    }
