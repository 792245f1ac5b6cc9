"""Alignment event streams against a real uvicorn server in this process (issue 14, finding 12: streams of an
orphaned job never ended; 300 of them took ingest p50 from 17 to 149 ms). Time limits are shortened here."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

import gateway.alignment as alignment
from gateway.app import create_app
from gateway.keys import create_key
from gateway.settings import GatewaySettings
from gateway.tests.test_alignment_store import SUMMARY, _pair
from tacit.db import Store
from tacit.schemas.align import SftJob
from tacit.serving import background_server


class Gateway:
    def __init__(self, url: str, store: Store) -> None:
        self.url, self.store = url, store
        self.jobs = store.alignment

    def key(self, *scopes: str) -> dict[str, str]:
        token, _ = create_key(self.store, list(scopes) or ["admin"], "t")
        return {"Authorization": f"Bearer {token}"}

    def running_job(self) -> str:
        spec = msgspec.to_builtins(SftJob(base_model="demo"))
        job_id = self.jobs.create("sft", spec, SUMMARY, [_pair(1, ("alice",))]).id
        assert self.jobs.claim(job_id, "celery@gone") is not None
        return job_id


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:

    monkeypatch.setattr(alignment, "POLL_S", 0.05)
    monkeypatch.setattr(alignment, "MAX_POLL_S", 0.2)
    database = f"sqlite:///{tmp_path / 'gateway.db'}"
    settings = GatewaySettings(
        database_url=database,
        feature_url="http://127.0.0.1:9",
        reward_url="http://127.0.0.1:9",
        retries=0,
        timeout_s=1,
        rescore_interval_s=3600,
    )
    with background_server(create_app(settings)) as url:
        store = Store(database)
        store.migrate()
        try:
            yield Gateway(url, store)
        finally:
            store.close()


def _read_stream(url: str, headers: dict[str, str], timeout: float) -> tuple[list[str], float]:
    """The stream's lines and how long it lasted; raises if it is still open after `timeout`."""
    start = time.monotonic()
    lines: list[str] = []
    with httpx.stream("GET", url, headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            lines.append(line)
            if time.monotonic() - start > timeout:
                raise AssertionError(f"the stream is still open after {timeout} s: {lines}")
    return lines, time.monotonic() - start


def test_the_stream_of_an_orphaned_job_ends(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alignment, "ORPHAN_AFTER_S", 0.5)
    job_id = gateway.running_job()  # its worker is gone: no heartbeat will come
    lines, lasted = _read_stream(f"{gateway.url}/v1/alignment/jobs/{job_id}/events", gateway.key("read"), 10)
    assert "event: started" in lines
    assert any(line.startswith(": the job's worker has been silent") for line in lines)
    assert lasted < 5


def test_a_quiet_stream_ends_after_the_idle_timeout(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alignment, "STREAM_IDLE_S", 0.6)
    job_id = gateway.running_job()
    alive = threading.Event()

    def heartbeat() -> None:  # a live worker that reports nothing new
        while not alive.wait(0.1):
            gateway.jobs.heartbeat(job_id)

    beating = threading.Thread(target=heartbeat, daemon=True)
    beating.start()
    try:
        lines, lasted = _read_stream(f"{gateway.url}/v1/alignment/jobs/{job_id}/events", gateway.key("read"), 10)
    finally:
        alive.set()
        beating.join()
    assert any(line.startswith(": no event for") for line in lines)
    assert 0.5 < lasted < 5
    # Resuming after the last id sees only what is new.
    last = max(int(line[4:]) for line in lines if line.startswith("id: "))
    gateway.jobs.finish(job_id, "succeeded", result={})
    lines, _ = _read_stream(
        f"{gateway.url}/v1/alignment/jobs/{job_id}/events", {**gateway.key("read"), "Last-Event-ID": str(last)}, 10
    )
    assert [line for line in lines if line.startswith("event: ")] == ["event: succeeded"]


def test_streams_are_capped_per_key_and_slots_come_back(gateway: Gateway) -> None:
    job_id = gateway.running_job()
    url = f"{gateway.url}/v1/alignment/jobs/{job_id}/events"
    key, other = gateway.key("read"), gateway.key("read")
    with httpx.Client(timeout=10) as client:
        held = [client.stream("GET", url, headers=key) for _ in range(alignment.STREAMS_PER_KEY)]
        responses = [h.__enter__() for h in held]
        assert [r.status_code for r in responses] == [200] * alignment.STREAMS_PER_KEY
        refused = client.get(url, headers=key)
        assert refused.status_code == 429
        assert refused.json()["code"] == "too_many_streams"
        assert "Retry-After" in refused.headers
        with client.stream("GET", url, headers=other) as response:  # another key is not affected
            assert response.status_code == 200
        for h in held:
            h.__exit__(None, None, None)
    deadline = time.monotonic() + 5  # closed by the client: the server frees the slots
    status = 429
    while time.monotonic() < deadline and status == 429:
        with httpx.stream("GET", url, headers=key, timeout=10) as response:
            status = response.status_code
        time.sleep(0.1)
    assert status == 200


def test_cancel_ends_a_job_whose_worker_is_gone_and_its_stream(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alignment, "ORPHAN_AFTER_S", 0.3)
    job_id = gateway.running_job()
    time.sleep(0.4)
    answer = httpx.post(f"{gateway.url}/v1/alignment/jobs/{job_id}/cancel", headers=gateway.key("train"), timeout=10)
    assert answer.status_code == 202
    assert answer.json()["status"] == "cancelled"
    assert "had not been heard of" in answer.json()["error"]
    lines, lasted = _read_stream(f"{gateway.url}/v1/alignment/jobs/{job_id}/events", gateway.key("read"), 10)
    assert "event: cancelled" in lines
    assert lasted < 5


def test_cancel_of_a_job_whose_worker_is_alive_only_flags_it(gateway: Gateway) -> None:
    job_id = gateway.running_job()
    answer = httpx.post(f"{gateway.url}/v1/alignment/jobs/{job_id}/cancel", headers=gateway.key("train"), timeout=10)
    assert answer.status_code == 202
    info: dict[str, Any] = answer.json()
    assert (info["status"], info["cancel_requested"]) == ("running", True)


def test_the_client_resumes_a_stream_the_gateway_ended_for_quiet_until_the_job_ends(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tacit.client import TacitClient

    monkeypatch.setattr(alignment, "STREAM_IDLE_S", 0.3)
    job_id = gateway.running_job()
    done = threading.Event()

    def worker() -> None:  # alive and quiet, then one progress event, quiet again, then finished
        for n in range(30):
            gateway.jobs.heartbeat(job_id)
            if n == 10:
                gateway.jobs.add_event(job_id, "stage", {"stage": "sft"})
            if done.wait(0.1):
                return
        gateway.jobs.finish(job_id, "succeeded", result={})

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    token = gateway.key("read")["Authorization"].split(" ", 1)[1]
    try:
        with TacitClient(gateway.url, token) as client:
            kinds = [e.kind for e in client.alignment_events(job_id)]
    finally:
        done.set()
        thread.join()
    assert kinds == ["queued", "started", "stage", "succeeded"]
