"""What every service's `serve()` shares: uvicorn options, with read timeouts and caps against stalled clients.

uvicorn waits forever for a request's headers and body, and keeps any number of connections: 500 connections
that sent nothing stayed open past 60 s and 40 stalled uploads held 301 MB. With httptools (uvicorn[standard],
what the lock installs) the protocol below closes a connection whose headers are not complete in
`header_timeout_s`, whose body stops arriving for `body_timeout_s` or takes over `body_deadline_s` in all (a
slow drip; 408), refuses connections above
`max_connections` (503, at once), and caps the body bytes of unfinished requests across the process (503 for
the request that would go over).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["ServerLimits", "background_server", "fast_server_options", "guarded_protocol", "serve"]

logger = logging.getLogger("tacit.serving")


class ServerLimits:
    """How long a client may take to send its request, and how much it may hold (defaults suit a laptop)."""

    def __init__(
        self,
        *,
        header_timeout_s: float = 10.0,
        body_timeout_s: float = 15.0,
        body_deadline_s: float = 300.0,
        max_connections: int = 512,
        max_inflight_body_bytes: int = 128 * 1024 * 1024,
        graceful_shutdown_s: int = 5,
    ) -> None:
        if (
            min(header_timeout_s, body_timeout_s, body_deadline_s, graceful_shutdown_s) <= 0
            or min(max_connections, max_inflight_body_bytes) < 1
        ):
            raise ValueError("server limits must be positive")
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.body_deadline_s = body_deadline_s
        self.max_connections = max_connections
        self.max_inflight_body_bytes = max_inflight_body_bytes
        self.graceful_shutdown_s = graceful_shutdown_s
        """On SIGTERM, open requests (event streams too) get this long before the process exits (uvicorn waits
        forever by default, which kept a stopped service, and a restart behind it, waiting)."""
        self.inflight_body_bytes = 0
        """Body bytes received for requests that have not finished (one counter per server process)."""
        self._refused: dict[str, int] = {}
        self._logged_at = 0.0

    def refused(self, why: str) -> None:
        """Count a refusal; log the counts at most every 10 s (an attack must not flood the log)."""
        self._refused[why] = self._refused.get(why, 0) + 1
        now = time.monotonic()
        if now - self._logged_at >= 10.0:
            counts = ", ".join(f"{n} x {what}" for what, n in sorted(self._refused.items()))
            logger.warning("refused in the last 10 s: %s", counts)
            self._refused.clear()
            self._logged_at = now


def _answer(status: int, reason: str, code: str, field: str, detail: str) -> bytes:
    """A complete HTTP answer with the edge kit's Problem body, sent before the connection is closed."""
    import msgspec

    from tacit.schemas.problem import Problem

    body = msgspec.json.encode(Problem(code=code, field=field, detail=detail))
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n"
    )
    if status == 503:
        head += "retry-after: 1\r\n"
    return (head + "\r\n").encode() + body


def guarded_protocol(limits: ServerLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with header/body read timeouts, a connection cap and an in-flight body cap."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _held = 0  # body bytes of the current request counted in limits.inflight_body_bytes
        _body_due = 0.0  # loop time by which the current request's body must be complete
        _phase = "headers"

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                limits.refused(f"connection over the limit of {limits.max_connections}")
                transport.write(
                    _answer(503, "Service Unavailable", "unavailable", "connection", "too many open connections")
                )
                transport.close()
                return
            self._arm(limits.header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._release()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._phase = "headers"
            if self._timer is None:
                self._arm(limits.header_timeout_s)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._phase = "body"
            self._body_due = self.loop.time() + limits.body_deadline_s
            self._arm_body()

        def on_body(self, body: bytes) -> None:
            if limits.inflight_body_bytes + len(body) > limits.max_inflight_body_bytes:
                limits.refused(f"request body over {limits.max_inflight_body_bytes} bytes in flight")
                self._abort(
                    503, "Service Unavailable", "unavailable", "body", "too many request bytes in flight; retry"
                )
                return
            limits.inflight_body_bytes += len(body)
            self._held += len(body)
            self._arm_body()
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._disarm()
            self._phase = "app"
            super().on_message_complete()

        def on_response_complete(self) -> None:
            self._release()
            super().on_response_complete()

        def timeout_keep_alive_handler(self) -> None:
            self._disarm()
            super().timeout_keep_alive_handler()

        # -- helpers -------------------------------------------------------------------------------------------

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._timed_out)

        def _arm_body(self) -> None:
            """The idle timeout, or what is left of the deadline when that is sooner."""
            self._arm(max(0.0, min(limits.body_timeout_s, self._body_due - self.loop.time())))

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _release(self) -> None:
            limits.inflight_body_bytes -= self._held
            self._held = 0

        def _timed_out(self) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            if self._phase == "body" and self.flow is not None and self.flow.read_paused:
                self._arm(limits.body_timeout_s)  # we stopped reading (the app is busy), not the client
                return
            if self._phase == "app":
                return
            what = "headers" if self._phase == "headers" else "body"
            limits.refused(f"request {what} timed out")
            if what == "headers":
                detail = f"the request headers did not arrive within {limits.header_timeout_s:g} s"
            elif self.loop.time() >= self._body_due:
                detail = f"the request body took longer than {limits.body_deadline_s:g} s"
            else:
                detail = f"the request body stopped arriving for {limits.body_timeout_s:g} s"
            self._abort(408, "Request Timeout", "timeout", what, detail)

        def _abort(self, status: int, reason: str, code: str, field: str, detail: str) -> None:
            self._disarm()
            cycle = self.cycle
            if cycle is None or not cycle.response_started:
                self.transport.write(_answer(status, reason, code, field, detail))
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
            self._release()
            self.transport.close()

    return GuardedHttpToolsProtocol


def fast_server_options(limits: ServerLimits | None = None) -> dict[str, Any]:
    """uvicorn's C HTTP parser (guarded, see the module) and event loop when installed; its defaults otherwise.

    Access logs are off: request metrics live in /metrics, and a log line per request costs throughput.
    """
    limits = limits or ServerLimits()
    options: dict[str, Any] = {
        "access_log": False,
        "limit_concurrency": limits.max_connections,
        "timeout_keep_alive": 5,
        "timeout_graceful_shutdown": limits.graceful_shutdown_s,
        # h11 (without httptools) has no read timeouts; it bounds the size of an incomplete request head.
        "h11_max_incomplete_event_size": 64 * 1024,
    }
    if importlib.util.find_spec("httptools") is not None:
        options["http"] = guarded_protocol(limits)
    if importlib.util.find_spec("uvloop") is not None:
        options["loop"] = "uvloop"
    return options


def serve(app: Any, host: str, port: int, *, log_level: str = "info", **overrides: Any) -> None:
    """Run `app` with uvicorn on `host:port` until interrupted, with `fast_server_options()` and `overrides`."""
    import uvicorn  # only a server process needs it

    uvicorn.run(app, host=host, port=port, log_level=log_level, **{**fast_server_options(), **overrides})


@contextlib.contextmanager
def background_server(app: Any, host: str = "127.0.0.1", *, start_timeout_s: float = 20.0) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port in a daemon thread, for tests that need real HTTP between
    services in one process; yields the base URL and stops the server on exit."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind((host, 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    if not server.started:
        server.should_exit = True
        raise RuntimeError(f"the server did not start on {host}:{port} within {start_timeout_s} s")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
