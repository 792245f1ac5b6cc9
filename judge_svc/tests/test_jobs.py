"""Durable batch jobs in a real Redis: a restarted service sees its jobs, a crashed one's jobs read as failed."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis
from litestar import Litestar
from litestar.testing import TestClient

from judge_svc.app import create_app
from judge_svc.jobs import ORPHANED, SHUT_DOWN, RedisRecords, utc
from judge_svc.settings import JudgeSettings
from judge_svc.testing import FakeOpenAIServer, Reply, judgment_text, prefer_longer
from tacit.schemas.judge import BatchJob, BatchJobList

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "tacit:judge:jobs:v1"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(prefer_longer) as fake:
        yield fake


def settings(server: FakeOpenAIServer, redis_url: str, **extra: Any) -> JudgeSettings:
    return JudgeSettings(base_url=server.base_url, model="judge-model", retries=0, redis_url=redis_url, **extra)


def item(sft_words: int, aligned_words: int, **extra: Any) -> dict[str, Any]:
    return {"prompt": f"Q {uuid.uuid4()}", "answer_a": "s " * sft_words, "answer_b": "a " * aligned_words, **extra}


def get(client: TestClient[Litestar], job_id: str) -> BatchJob:
    response = client.get(f"/v1/judgments/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return msgspec.json.decode(response.content, type=BatchJob)


def wait(client: TestClient[Litestar], job_id: str, timeout_s: float = 10.0) -> BatchJob:
    deadline = time.monotonic() + timeout_s
    while (job := get(client, job_id)).status == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    return job


def test_a_restarted_service_sees_finished_jobs(server: FakeOpenAIServer, redis_url: str) -> None:
    alignment = f"align-{uuid.uuid4().hex}"
    body = {"items": [item(2, 5), item(3, 1), item(4, 4)], "evaluation": True, "alignment_job_id": alignment}
    with TestClient(create_app(settings(server, redis_url))) as first:
        job_id = first.post("/v1/judgments:batch", json=body).json()["job_id"]
        before = wait(first, job_id)
    assert before.status == "succeeded"
    assert before.evaluation is not None
    assert before.consistency_rate == 1.0

    with TestClient(create_app(settings(server, redis_url))) as second:
        after = get(second, job_id)
        listed = msgspec.json.decode(
            second.get("/v1/judgments/jobs", params={"alignment_job_id": alignment}).content, type=BatchJobList
        )
        plot = second.get(f"/v1/judgments/jobs/{job_id}/plot.png")
    assert after == before  # verdicts, evaluation, counts and metadata all survived
    assert after.verdicts is not None
    assert [v.winner for v in after.verdicts] == ["B", "A", "tie"]
    assert [j.job_id for j in listed.jobs] == [job_id]
    assert listed.jobs[0].verdicts is None
    assert (plot.status_code, plot.content[:4]) == (200, b"\x89PNG")

    keys = redis.Redis.from_url(redis_url)
    ttl = keys.ttl(f"{PREFIX}:job:{job_id}")
    assert 0 < ttl <= JudgeSettings().job_ttl_s
    assert not keys.exists(f"{PREFIX}:lease:{job_id}")  # finished: no lease left behind


def test_job_ttl_setting_and_expired_records_leave_the_listing(server: FakeOpenAIServer, redis_url: str) -> None:
    alignment = f"align-{uuid.uuid4().hex}"
    body = {"items": [item(1, 2, both_orders=False)], "alignment_job_id": alignment}
    with TestClient(create_app(settings(server, redis_url, job_ttl_s=120))) as client:
        kept, expiring = (client.post("/v1/judgments:batch", json=body).json()["job_id"] for _ in range(2))
        wait(client, kept)
        wait(client, expiring)
        keys = redis.Redis.from_url(redis_url)
        assert 0 < keys.ttl(f"{PREFIX}:job:{kept}") <= 120
        keys.delete(f"{PREFIX}:job:{expiring}")  # what Redis does when the TTL runs out
        listed = client.get("/v1/judgments/jobs", params={"alignment_job_id": alignment}).json()["jobs"]
        assert [j["job_id"] for j in listed] == [kept]
        assert keys.zscore(f"{PREFIX}:alignment:{alignment}", expiring) is None  # pruned from the index
        assert client.get(f"/v1/judgments/jobs/{expiring}").status_code == 404


def test_clean_shutdown_stores_running_jobs_as_cancelled(server: FakeOpenAIServer, redis_url: str) -> None:
    server.push(Reply.slow(1.0, judgment_text(4, 6)))
    with TestClient(create_app(settings(server, redis_url))) as first:
        job_id = first.post("/v1/judgments:batch", json={"items": [item(1, 2, both_orders=False)]}).json()["job_id"]
        assert get(first, job_id).status == "running"
    with TestClient(create_app(settings(server, redis_url))) as second:
        job = get(second, job_id)
    assert (job.status, job.error, job.done) == ("cancelled", SHUT_DOWN, 0)
    assert job.finished_at is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_killed_service_leaves_failed_jobs_not_running_ones(server: FakeOpenAIServer, redis_url: str) -> None:
    """A real judge_svc process is SIGKILLed mid-job; a new instance on the same Redis reports the job failed."""
    lease_s = 1.0  # renewed every 0.25 s: margin for a loaded machine
    server.push(Reply.slow(30.0, judgment_text(4, 6)))  # the job is still waiting on the judge when killed
    port = _free_port()
    env = {
        **os.environ,
        "TACIT_JUDGE_BASE_URL": server.base_url,
        "TACIT_JUDGE_MODEL": "judge-model",
        "TACIT_JUDGE_RETRIES": "0",
        "TACIT_JUDGE_REDIS_URL": redis_url,
        "TACIT_JUDGE_JOB_LEASE_S": str(lease_s),
        "TACIT_JUDGE_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", "from judge_svc.app import serve; serve()"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "judge_svc did not start"
            time.sleep(0.1)
        body = {"items": [item(1, 2, both_orders=False)], "evaluation": True, "label": "crash test"}
        job_id = httpx.post(f"{url}/v1/judgments:batch", json=body, timeout=5).json()["job_id"]

        with TestClient(create_app(settings(server, redis_url, job_lease_s=lease_s))) as other:
            time.sleep(2.5 * lease_s)
            alive = get(other, job_id)  # the owner keeps renewing its lease: still running
            assert (alive.status, alive.label) == ("running", "crash test")

            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            killed_at = time.monotonic()
            dead = wait(other, job_id, timeout_s=10 * lease_s)
            noticed_after = time.monotonic() - killed_at
            assert (dead.status, dead.error) == ("failed", ORPHANED)
            assert noticed_after < 5 * lease_s
            assert dead.finished_at is not None
            plot = other.get(f"/v1/judgments/jobs/{job_id}/plot.png")
            assert (plot.status_code, plot.json()["code"]) == (409, "not_ready")

        with TestClient(create_app(settings(server, redis_url))) as later:
            assert get(later, job_id).status == "failed"  # stored as failed, not re-derived each time
        raw = redis.Redis.from_url(redis_url).get(f"{PREFIX}:job:{job_id}")
        assert raw is not None
        assert msgspec.json.decode(raw, type=BatchJob).status == "failed"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def test_an_unreachable_job_store_is_a_503(server: FakeOpenAIServer) -> None:
    dead_redis = f"redis://127.0.0.1:{_free_port()}/0"
    with TestClient(create_app(settings(server, dead_redis))) as client:
        response = client.post("/v1/judgments:batch", json={"items": [item(1, 2)]})
        assert response.status_code == 503
        assert response.json()["code"] == "unavailable"
        assert client.get("/v1/judgments/jobs/x").status_code == 503


def test_records_round_trip_with_a_lease(redis_url: str) -> None:
    import asyncio

    async def run() -> tuple[BatchJob | None, BatchJob | None, list[BatchJob]]:
        records = RedisRecords.from_url(redis_url, ttl_s=60, lease_s=0.2, prefix=f"test:{uuid.uuid4().hex}")
        try:
            job = BatchJob(job_id="j1", status="running", done=1, total=3, created_at=utc(time.time()))
            await records.save(job)
            fresh = await records.get("j1")
            await asyncio.sleep(0.4)  # nobody renews the lease
            return fresh, await records.get("j1"), await records.list(alignment_job_id=None, limit=10)
        finally:
            await records.aclose()

    fresh, stale, listed = asyncio.run(run())
    assert fresh is not None
    assert (fresh.status, fresh.done) == ("running", 1)
    assert stale is not None
    assert (stale.status, stale.error, stale.done) == ("failed", ORPHANED, 1)
    assert [(j.job_id, j.status) for j in listed] == [("j1", "failed")]


def test_times_are_iso_8601_utc_and_epoch_records_still_read(redis_url: str) -> None:
    import asyncio

    prefix = f"test:{uuid.uuid4().hex}"
    # A record as the versions before ISO 8601 wrote it: epoch seconds (and `done` for `succeeded`).
    legacy = (
        b'{"job_id":"old","status":"done","done":1,"total":1,"created_at":1733400000.25,"finished_at":1733400001.5}'
    )

    async def run() -> tuple[BatchJob | None, list[BatchJob]]:
        records = RedisRecords.from_url(redis_url, ttl_s=60, prefix=prefix)
        try:
            await records.client.set(records._job("old"), legacy)
            await records.client.zadd(records._index(None), {"old": time.time()})
            return await records.get("old"), await records.list(alignment_job_id=None, limit=10)
        finally:
            await records.aclose()

    old, listed = asyncio.run(run())
    assert old is not None
    assert old.status == "succeeded"
    assert old.created_at == dt.datetime(2024, 12, 5, 12, 0, 0, 250000, tzinfo=dt.UTC)
    assert old.finished_at == dt.datetime(2024, 12, 5, 12, 0, 1, 500000, tzinfo=dt.UTC)
    assert [j.job_id for j in listed] == ["old"]
    encoded = msgspec.json.decode(msgspec.json.encode(old))
    assert (encoded["created_at"], encoded["finished_at"]) == (
        "2024-12-05T12:00:00.250000Z",
        "2024-12-05T12:00:01.500000Z",
    )
