"""Who may call what: the API-key guard of every scoped route, and the JSON answer shared by the route modules.

One guard for the whole gateway (sessions, reward models, alignment jobs, the collector's key routes): the key
row is read on every request (a revocation holds at once; `gateway.keys` remembers only verified tokens, so
no scrypt runs twice), the key is rate-limited, and its scopes are checked against the route's `scope` option.
Failed authentications that cost a scrypt (a stored key's prefix, a wrong secret) are rate-limited per client
address and per key prefix: over the limit, 429 before any scrypt runs. A token verified lately, and one whose
prefix matches no key, costs no scrypt and is never throttled (so an attack on a prefix cannot lock out a key
in use).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from gateway.keys import PREFIX_CHARS, allowed, authenticate
from gateway.limits import RateLimiter
from gateway.openapi import documented, request_body
from tacit.edge import json_response
from tacit.schemas.problem import RequestError

__all__ = ["JSON", "AuthFailures", "bearer", "client_address", "json_response", "require_scope", "scoped"]

JSON = "application/json"


#: A key is 49 characters; an Authorization header far longer than any credential is refused unread.
MAX_AUTHORIZATION_CHARS = 1024


class AuthFailures:
    """Failed scrypt checks per client address and per key prefix (token buckets; `rate` <= 0: no limit)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.by_address = RateLimiter(rate, burst)
        self.by_prefix = RateLimiter(rate, burst)

    def wait(self, address: str, token: str) -> float:
        """Seconds until a failed authentication from `address` for `token`'s prefix is allowed again."""
        return max(self.by_address.wait(address), self.by_prefix.wait(token[:PREFIX_CHARS]))

    def failed(self, address: str, token: str) -> None:
        self.by_address.take(address)
        self.by_prefix.take(token[:PREFIX_CHARS])


def bearer(connection: ASGIConnection[Any, Any, Any, Any], what: str = "key") -> str:
    """The credential of `Authorization: Bearer <credential>`; 401 without one, 431 for an oversized one."""
    header = connection.headers.get("authorization", "")
    if len(header) > MAX_AUTHORIZATION_CHARS:
        raise RequestError(
            431,
            "header_too_large",
            "authorization",
            f"over {MAX_AUTHORIZATION_CHARS} characters",
        )
    if not header.lower().startswith("bearer ") or not header[7:].strip():
        raise RequestError(401, "unauthorized", "authorization", f"send a {what} as 'Authorization: Bearer <{what}>'")
    return header[7:].strip()


def client_address(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The client's address (the proxy's `X-Forwarded-For` only when it is a configured trusted proxy: uvicorn)."""
    return connection.client.host if connection.client else "?"


async def require_scope(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Guard: a valid `Authorization: Bearer <key>` whose scopes include the route's `scope` option."""
    token = bearer(connection)
    state = connection.app.state
    failures: AuthFailures = state.auth_failures
    address = client_address(connection)
    hashed = False

    def before_hash() -> None:
        nonlocal hashed
        wait = failures.wait(address, token)
        if wait > 0:
            raise RequestError(
                429,
                "rate_limited",
                "authorization",
                "too many failed authentications from this address or for this key prefix",
                {"Retry-After": str(math.ceil(wait))},
            )
        hashed = True

    key = await anyio.to_thread.run_sync(lambda: authenticate(state.store, token, before_hash=before_hash))
    if key is None:
        if hashed:
            failures.failed(address, token)
        raise RequestError(401, "unauthorized", "authorization", "unknown or revoked API key")
    limiter: RateLimiter = state.limiter
    wait = limiter.take(key.id)
    if wait > 0:
        raise RequestError(
            429,
            "rate_limited",
            "authorization",
            f"this key is over the rate limit of {limiter.describe()}",
            {"Retry-After": str(math.ceil(wait))},
        )
    needed = handler.opt.get("scope", "admin")
    if not allowed(key.scopes, needed):
        raise RequestError(403, "forbidden", "authorization", f"this key lacks the '{needed}' scope")


def scoped(
    scope: str,
    ok: Any = Any,
    success: tuple[int, ...] = (200,),
    media_type: str = JSON,
    body: Any = None,
    example: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Guard and scope of a route, and for the OpenAPI schema what it answers (`ok` for the `success` statuses)
    and the body it reads (`body`, a msgspec type, with a function that builds an `example` of it)."""
    opt: dict[str, Any] = {"scope": scope}
    if body is not None:
        if example is None:
            raise ValueError("a documented request body needs an example")
        opt |= request_body(body, example)
    return {
        "guards": [require_scope],
        "opt": opt,
        "responses": documented(ok, *success, media_type=media_type),
    }
