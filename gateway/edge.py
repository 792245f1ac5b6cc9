"""What the gateway checks on every request before its route sees it, and adds to every answer.

- Headers over `max_header_bytes` in total: 431, nothing of them kept.
- A body sent as anything but JSON (`Content-Type` other than `application/json` or `*/*+json`): 415. Every
  route that reads a body reads JSON; a request without a Content-Type is read as JSON.
- Security headers on every response, 404s and errors included (`secure_headers`, a litestar `before_send`
  hook): `nosniff`, no referrer, no framing, `Cache-Control: no-store` unless the route chose its own caching
  (the SDK and page assets), and a deny-all CSP on non-HTML answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from tacit.schemas.problem import Problem

__all__ = ["EdgeMiddleware", "is_json", "secure_headers"]

_BODY_METHODS = {"POST", "PUT", "PATCH"}
_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
_API_CSP = b"default-src 'none'; frame-ancestors 'none'"


def is_json(content_type: str) -> bool:
    """Whether a Content-Type value names JSON (`application/json`, `application/problem+json`, ...)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class EdgeMiddleware:
    """ASGI middleware: header size limit (431) and JSON-only bodies (415)."""

    def __init__(self, app: Any, max_header_bytes: int) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", ())
        total = 0
        largest, largest_size = b"", -1
        content_type = None
        for name, value in headers:
            size = len(name) + len(value)
            total += size
            if size > largest_size:
                largest, largest_size = name, size
            if name == b"content-type":
                content_type = value.decode("latin-1")
        if total > self.max_header_bytes:
            await _refuse(
                send,
                431,
                "header_too_large",
                largest.decode("latin-1").lower() or "$",
                f"request headers are {total} bytes, over the limit of {self.max_header_bytes}",
            )
            return
        if scope["method"] in _BODY_METHODS and content_type is not None and not is_json(content_type):
            await _refuse(
                send,
                415,
                "unsupported_media_type",
                "content-type",
                f"this API reads JSON bodies only (Content-Type: application/json), not {content_type[:100]!r}",
            )
            return
        await self.app(scope, receive, send)


async def secure_headers(message: Any, scope: Any) -> None:
    """litestar `before_send` hook: the security headers on every HTTP answer."""
    if message["type"] == "http.response.start":
        message["headers"] = _secure(list(message.get("headers", ())))


def _secure(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    present = {name.lower(): value for name, value in headers}
    added = [(name, value) for name, value in _ALWAYS if name not in present]
    if b"cache-control" not in present:
        added.append((b"cache-control", b"no-store"))
    if b"content-security-policy" not in present and not present.get(b"content-type", b"").startswith(b"text/html"):
        added.append((b"content-security-policy", _API_CSP))
    return headers + added


async def _refuse(send: Any, status: int, code: str, field: str, detail: str) -> None:
    body = msgspec.json.encode(Problem(code=code, field=field, detail=detail))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
