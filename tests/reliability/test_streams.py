"""Event streams of an orphaned alignment job against the process stack (issue 14, finding 12: 300 such streams
never ended and took ingest p50 from 17 to 149 ms). Now a key holds a few streams, the gateway a bounded number,
they poll with back-off and end; ingest latency is measured without and with the flood."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import httpx
import msgspec
import pytest

from gateway.alignment import MAX_STREAMS, STREAMS_PER_KEY
from gateway.keys import create_key
from gateway.tests.test_alignment_store import SUMMARY, _pair
from tacit.db import Store
from tacit.schemas.align import SftJob
from tacit.simulate import simulate_session
from tests.e2e.conftest import Stack
from tests.reliability.out import write_fragment

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.slow]

ATTEMPTS = 300
KEYS = 75


def _ingest_p50(stack: Stack, n: int, seed: int) -> float:
    times = []
    with stack.client("ingest") as client:
        for i in range(n):
            body = msgspec.json.encode(simulate_session(seed=seed + i, samples=120))
            start = time.perf_counter()
            answer = client.post("/v1/sessions", content=body)
            times.append((time.perf_counter() - start) * 1000)
            assert answer.status_code in (200, 201, 202), answer.text
    return statistics.median(times)


def test_a_flood_of_event_streams_is_capped_and_ingest_stays_fast(stack: Stack) -> None:
    store = Store(stack.database_url)
    jobs = store.alignment
    try:
        job_id = jobs.create("sft", msgspec.to_builtins(SftJob(base_model="demo")), SUMMARY, [_pair(1, ("a",))]).id
        assert jobs.claim(job_id, "celery@gone") is not None  # running, and its worker will never write again
        tokens = [create_key(store, ["read"], f"stream-{n}")[0] for n in range(KEYS)]
    finally:
        store.close()
    before = _ingest_p50(stack, 60, 5000)

    url = f"{stack.gateway.url}/v1/alignment/jobs/{job_id}/events"
    statuses: dict[int, int] = {}
    opened: list[Any] = []
    lock = threading.Lock()
    stop = threading.Event()

    def hold(token: str) -> None:
        with httpx.Client(timeout=httpx.Timeout(10, read=None)) as client:
            try:
                with client.stream("GET", url, headers={"Authorization": f"Bearer {token}"}) as response:
                    with lock:
                        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if response.status_code == 200:
                        opened.append(response)
                        for _ in response.iter_lines():
                            if stop.is_set():
                                return
            except httpx.HTTPError as err:
                with lock:
                    statuses[-1] = statuses.get(-1, 0) + 1
                    _ = err

    threads = [threading.Thread(target=hold, args=(tokens[i % KEYS],), daemon=True) for i in range(ATTEMPTS)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    during = _ingest_p50(stack, 60, 6000)
    stop.set()
    accepted = statuses.get(200, 0)
    write_fragment(
        "access",
        {
            "event_stream_flood": {
                "attempts": ATTEMPTS,
                "keys": KEYS,
                "accepted": accepted,
                "refused_429_per_key": statuses.get(429, 0),
                "refused_503_gateway": statuses.get(503, 0),
                "ingest_p50_ms_before": round(before, 1),
                "ingest_p50_ms_during": round(during, 1),
            }
        },
    )
    print(f"streams: {statuses}; ingest p50 {before:.1f} ms -> {during:.1f} ms")
    assert accepted <= min(MAX_STREAMS, KEYS * STREAMS_PER_KEY)
    assert statuses.get(429, 0) + statuses.get(503, 0) >= ATTEMPTS - MAX_STREAMS
    assert during < max(3 * before, before + 30)
