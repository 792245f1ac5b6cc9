"""Large batches against the gateway process (issue 14, finding 8: one 52 MB sessions:batch added 761 MB RSS and
three at once blocked /healthz over 5 s). Now: 16 MiB per batch, decoded off the event loop, two at a time."""

from __future__ import annotations

import threading
import time

import httpx
import msgspec
import pytest

from gateway.sessions import MAX_BATCH_BYTES
from tacit.simulate import simulate_session
from tests.e2e.conftest import Stack, rss_bytes
from tests.reliability.out import write_fragment

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.slow]

MiB = 1024 * 1024
CLIENTS = 3


def _largest_batch(prefix: str) -> bytes:
    """As many 3000-sample sessions as fit under the byte limit (and the 500-session limit)."""
    one = msgspec.json.encode(simulate_session(seed=1, samples=3000, session_id="x"))
    n = min(500, int(MAX_BATCH_BYTES * 0.95) // (len(one) + 1))
    sessions = [simulate_session(seed=i, samples=3000, session_id=f"{prefix}-{i}", user_id=prefix) for i in range(n)]
    return msgspec.json.encode({"sessions": sessions})


def test_large_batches_leave_health_checks_answered_and_memory_bounded(stack: Stack) -> None:
    assert stack.gateway.process is not None
    pid = stack.gateway.process.pid
    bodies = [_largest_batch(f"batch{i}") for i in range(CLIENTS)]
    before = rss_bytes(pid)
    statuses: list[int] = []
    peak = [before]
    done = threading.Event()

    def post(body: bytes) -> None:
        with httpx.Client(base_url=stack.gateway.url, headers=stack.headers("ingest"), timeout=600) as client:
            statuses.append(client.post("/v1/sessions:batch", content=body).status_code)

    def watch() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], rss_bytes(pid))
            except (OSError, AssertionError):  # the process is gone: the test's own checks say why
                return
            time.sleep(0.05)

    threads = [threading.Thread(target=post, args=(b,)) for b in bodies]
    watcher = threading.Thread(target=watch)
    watcher.start()
    for t in threads:
        t.start()
    health: list[float] = []
    with httpx.Client(base_url=stack.gateway.url, timeout=30) as client:
        while any(t.is_alive() for t in threads):
            start = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            health.append(time.perf_counter() - start)
            time.sleep(0.1)
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    figures = {
        "batches": CLIENTS,
        "batch_mb": round(len(bodies[0]) / MiB, 1),
        "sessions_per_batch": bodies[0].count(b'"session_id"'),
        "statuses": statuses,
        "healthz_checks": len(health),
        "healthz_max_s": round(max(health), 3) if health else None,
        "rss_mb_before": before // MiB,
        "rss_mb_peak": peak[0] // MiB,
    }
    write_fragment("access", {"large_batches": figures})
    print(figures)
    assert statuses == [200] * CLIENTS
    assert health, "no health check ran while the batches were posted"
    assert max(health) < 2.0
    assert peak[0] - before < 1200 * MiB
    with httpx.Client(base_url=stack.gateway.url, headers=stack.headers("ingest"), timeout=60) as client:
        over = client.post("/v1/sessions:batch", content=bodies[0][:-1] + b',"pad":"' + b"x" * MAX_BATCH_BYTES + b'"}')
    assert over.status_code == 413
