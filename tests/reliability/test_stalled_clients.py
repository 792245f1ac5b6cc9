"""Stalled clients against the gateway process (issue 14, finding 6: 500 connections that sent nothing stayed open
past 60 s; 40 stalled uploads held 301 MB). Default limits: 10 s for the head, 15 s between body chunks."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tacit.serving import ServerLimits
from tests.e2e.conftest import Stack, rss_bytes
from tests.reliability.out import write_fragment

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.slow]

MiB = 1024 * 1024
SILENT = 500
UPLOADS = 40


def _open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1 << 16) is None
    except BlockingIOError:
        return True
    except OSError:
        return False


def _attack(stack: Stack) -> dict[str, int]:
    """Stalled uploads and silent connections; what the gateway held at the peak and after its timeouts."""
    assert stack.gateway.process is not None
    pid, port = stack.gateway.process.pid, stack.gateway.port
    head = (
        f"POST /v1/sessions:batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.keys['ingest']}\r\n"
        "Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
    ).encode()
    uploads, refused_uploads = [], 0
    for _ in range(UPLOADS):
        sock = socket.create_connection(("127.0.0.1", port))
        uploads.append(sock)
        try:
            sock.sendall(head + b"[" + b" " * (8 * MiB))
        except OSError:
            refused_uploads += 1
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(SILENT)]
    time.sleep(2)
    peak = rss_bytes(pid)
    limits = ServerLimits()
    time.sleep(max(limits.header_timeout_s, limits.body_timeout_s) + 3)
    still_open = sum(map(_open, uploads + silent))
    for sock in uploads + silent:
        sock.close()
    return {
        "uploads_refused_at_once": refused_uploads,
        "rss_mb_peak": peak // MiB,
        "rss_mb_after_timeouts": rss_bytes(pid) // MiB,
        "open_after_timeouts": still_open,
        "healthz_after": httpx.get(f"{stack.gateway.url}/healthz", timeout=10).status_code,
    }


def test_stalled_connections_and_uploads_are_cut_and_memory_stays_bounded(stack: Stack) -> None:
    assert stack.gateway.process is not None
    before = rss_bytes(stack.gateway.process.pid) // MiB
    first, second = _attack(stack), _attack(stack)  # the second reuses what the first freed: no growth
    figures = {"silent_connections": SILENT, "stalled_uploads": UPLOADS, "rss_mb_before": before}
    figures |= {f"first_{k}": v for k, v in first.items()} | {f"second_{k}": v for k, v in second.items()}
    write_fragment("access", {"stalled_clients": figures})
    print(figures)
    for round_ in (first, second):
        assert round_["open_after_timeouts"] == 0
        assert round_["healthz_after"] == 200
        assert round_["rss_mb_peak"] - before < 200
    assert second["rss_mb_peak"] <= first["rss_mb_peak"] + 32
