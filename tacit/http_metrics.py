"""HTTP request metrics shared by every service: one ASGI middleware, the same metric names, a `service` label.

`tacit_http_requests_total` and `tacit_http_request_duration_seconds` carry `service`, `method`, `route` (the
route template, so ids in paths do not multiply the series) and `status`. Scrapes and liveness probes are left
out: they are the monitoring's own traffic. Plain ASGI (no web framework imported): litestar sets
`scope["path_template"]` before app-level middleware runs, so only matched routes are counted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["BUCKETS", "HttpMetrics", "ServiceMetrics"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]
"""Any ASGI app; a framework's own, narrower types are accepted and returned."""

#: Seconds; up to two minutes for judgments (an LLM answering twice).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_LABELS = ("service", "method", "route", "status")


class HttpMetrics:
    """Request count and latency of one service, in `registry` (each app has its own: many can share a process)."""

    def __init__(
        self, service: str, registry: CollectorRegistry, *, exclude: Iterable[str] = ("/metrics", "/healthz")
    ) -> None:
        self.service = service
        self.exclude = frozenset(exclude)
        self.requests = Counter(
            "tacit_http_requests",
            "HTTP requests by service, method, route template and status.",
            _LABELS,
            registry=registry,
        )
        self.latency = Histogram(
            "tacit_http_request_duration_seconds",
            "Time from request start to the last response byte, by service, method, route template and status.",
            _LABELS,
            buckets=BUCKETS,
            registry=registry,
        )

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Wrap an ASGI app (litestar: `Litestar(middleware=[metrics.middleware])`)."""

        async def measured(scope: Scope, receive: Receive, send: Send) -> None:
            route = scope.get("path_template") or "unmatched"
            if scope["type"] != "http" or route in self.exclude:
                await app(scope, receive, send)
                return
            start = time.perf_counter()
            status = 500  # an exception before the response started

            async def send_and_record(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_and_record)
            finally:
                labels = (self.service, scope.get("method", ""), route, str(status))
                self.requests.labels(*labels).inc()
                self.latency.labels(*labels).observe(time.perf_counter() - start)

        return measured


class ServiceMetrics:
    """A service's Prometheus metrics: a registry of its own holding the shared HTTP metrics; a service subclasses
    it to add its own metrics to `registry`."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.http = HttpMetrics(service, self.registry)

    def render(self) -> bytes:
        """The exposition text of every metric in the registry."""
        return generate_latest(self.registry)
