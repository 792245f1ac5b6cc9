"""The shared uvicorn options against stalled clients: a real uvicorn server on loopback, raw sockets as clients.

Reproduces finding 6 of issue 14 (500 connections that sent nothing stayed open past 60 s; 40 stalled uploads
held 301 MB) with small, bounded numbers, then once with the default limits.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tacit.serving import ServerLimits, fast_server_options

pytest.importorskip("httptools", reason="the guarded protocol needs httptools (uvicorn[standard])")

MiB = 1024 * 1024

#: An ASGI app that buffers the whole body before answering, as the services' `await request.body()` does.
_SERVER = """
import asyncio
import sys
import uvicorn
from tacit.serving import ServerLimits, fast_server_options

async def app(scope, receive, send):
    if scope["path"] == "/stream":  # an event stream that never ends by itself
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        while True:
            await send({"type": "http.response.body", "body": b"tick\\n", "more_body": True})
            await asyncio.sleep(0.1)
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})

limits = ServerLimits(**eval(sys.argv[2])) if len(sys.argv) > 2 else None
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="off",
            **fast_server_options(limits))
"""


class Server:
    def __init__(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.port, self.proc = port, proc

    def get(self) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(tmp_path: Path, limits: str | None) -> Server:
    port = _free_port()
    argv = [sys.executable, "-c", textwrap.dedent(_SERVER), str(port)] + ([limits] if limits else [])
    with (tmp_path / "server.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    server = Server(port, proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if server.get().status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError((tmp_path / "server.log").read_text())


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.proc.kill()
        server.proc.wait(timeout=10)


def _connect(port: int, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if first:
        sock.sendall(first)
    return sock


def _answer(sock: socket.socket, timeout: float) -> bytes | None:
    """What the server sent before closing (b"" for a bare close); None while it keeps the connection open."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return data


def test_defaults_bound_every_read_and_hold() -> None:
    limits = ServerLimits()
    assert limits.header_timeout_s <= 15
    assert limits.body_timeout_s <= 30
    assert limits.max_connections <= 1024
    assert limits.max_inflight_body_bytes <= 128 * MiB
    options = fast_server_options(limits)
    assert options["limit_concurrency"] == limits.max_connections
    assert not isinstance(options["http"], str)  # the guarded protocol, not uvicorn's plain one
    with pytest.raises(ValueError, match="positive"):
        ServerLimits(header_timeout_s=0)


def test_connections_that_send_no_complete_head_are_closed_with_408(tmp_path: Path, servers: list[Server]) -> None:
    server = _start(tmp_path, "{'header_timeout_s': 1.0}")
    servers.append(server)
    silent = [_connect(server.port) for _ in range(30)]
    partial = [_connect(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(30)]
    assert server.get().status_code == 200  # others are served meanwhile
    start = time.monotonic()
    answers = [_answer(sock, 5) for sock in silent + partial]
    waited = time.monotonic() - start
    for sock in silent + partial:
        sock.close()
    assert None not in answers, "a stalled connection stayed open"
    assert all(b" 408 " in a for a in answers if a is not None)
    assert all(b'{"code":"timeout","field":"headers"' in a for a in answers if a is not None)  # the edge kit's Problem
    assert waited < 4


def test_stalled_uploads_are_cut_and_their_memory_freed(tmp_path: Path, servers: list[Server]) -> None:
    server = _start(tmp_path, "{'body_timeout_s': 1.0, 'max_inflight_body_bytes': 64 * 1024 * 1024}")
    servers.append(server)
    before = server.rss()
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
    uploads = [_connect(server.port, head + b"x" * (2 * MiB)) for _ in range(20)]
    time.sleep(0.3)
    answers = [_answer(sock, 5) for sock in uploads]
    for sock in uploads:
        sock.close()
    assert None not in answers, "a stalled upload stayed open"
    statuses = [a.split(b" ", 2)[1] for a in answers if a]
    assert set(statuses) <= {b"408", b"503"}
    assert b"408" in statuses
    assert server.get().status_code == 200
    assert server.rss() - before < 32 * MiB


def test_bodies_in_flight_are_capped(tmp_path: Path, servers: list[Server]) -> None:
    server = _start(tmp_path, "{'body_timeout_s': 5.0, 'max_inflight_body_bytes': 8 * 1024 * 1024}")
    servers.append(server)
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 6291456\r\n\r\n"
    first = _connect(server.port, head + b"x" * (3 * MiB))
    time.sleep(0.3)
    second = _connect(server.port, head + b"x" * (6 * MiB))
    answer = _answer(second, 3)
    assert answer is not None
    assert b" 503 " in answer
    assert b"retry-after" in answer.lower()
    first.sendall(b"x" * (3 * MiB))  # the first upload completes: it was within the cap
    assert b"\r\n6291456\r\n" in (_answer(first, 5) or b"")
    first.close()
    second.close()
    complete = httpx.post(f"http://127.0.0.1:{server.port}/upload", content=b"y" * (7 * MiB), timeout=10)
    assert complete.text == str(7 * MiB)  # the counter was released by the finished and the refused request


def test_connections_above_the_cap_are_refused_at_once(tmp_path: Path, servers: list[Server]) -> None:
    server = _start(tmp_path, "{'header_timeout_s': 3.0, 'max_connections': 40}")
    servers.append(server)
    held = [_connect(server.port) for _ in range(40)]
    extra = [_connect(server.port) for _ in range(20)]
    start = time.monotonic()
    answers = [_answer(sock, 2) for sock in extra]
    assert time.monotonic() - start < 2
    assert all(a is not None and b" 503 " in a for a in answers)
    for sock in held + extra:
        sock.close()
    time.sleep(0.2)
    assert server.get().status_code == 200


@pytest.mark.slow
def test_five_hundred_stalled_connections_are_gone_within_the_default_header_timeout(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = _start(tmp_path, None)
    servers.append(server)
    stalled = [_connect(server.port, b"GET / HTTP/1.1\r\n" if i % 2 else b"") for i in range(500)]
    start = time.monotonic()
    deadline = ServerLimits().header_timeout_s + 5
    answers = [_answer(sock, max(0.1, deadline - (time.monotonic() - start))) for sock in stalled]
    for sock in stalled:
        sock.close()
    assert sum(a is None for a in answers) == 0
    assert time.monotonic() - start < deadline
    assert server.get().status_code == 200


def test_a_stop_does_not_wait_forever_for_open_streams(tmp_path: Path, servers: list[Server]) -> None:
    server = _start(tmp_path, "{'graceful_shutdown_s': 1}")
    servers.append(server)
    streams = [httpx.stream("GET", f"http://127.0.0.1:{server.port}/stream", timeout=10) for _ in range(5)]
    for stream in streams:
        assert stream.__enter__().status_code == 200
    start = time.monotonic()
    server.proc.terminate()
    server.proc.wait(timeout=15)
    waited = time.monotonic() - start
    for stream in streams:
        with contextlib.suppress(httpx.HTTPError):
            stream.__exit__(None, None, None)
    assert waited < 4


def test_a_body_sent_in_a_slow_drip_is_cut_at_the_deadline(tmp_path: Path, servers: list[Server]) -> None:
    server = _start(tmp_path, "{'body_timeout_s': 0.5, 'body_deadline_s': 1.5}")
    servers.append(server)
    sock = _connect(server.port, b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    sock.setblocking(False)
    start = time.monotonic()
    answer, cut_after = b"", None
    try:
        while time.monotonic() - start < 6:  # 100 bytes every 0.2 s: never idle for 0.5 s
            try:
                chunk = sock.recv(4096)
            except BlockingIOError:
                chunk = None
            if chunk is not None:  # the server answered or closed
                answer += chunk
                cut_after = time.monotonic() - start
                break
            sock.sendall(b"x" * 100)
            time.sleep(0.2)
    except OSError:  # reset: the server closed with our last bytes unread
        cut_after = time.monotonic() - start
    finally:
        sock.close()
    assert cut_after is not None, "a slow drip kept the request open"
    assert 1.3 < cut_after < 4
    assert not answer or (b" 408 " in answer and b"took longer than 1.5 s" in answer)
