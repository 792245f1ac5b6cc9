"""IFLLM imports on a real cpu worker, through the gateway: a restarted import resumes after the task folders it
recorded as done, and a cancelled one stops between task folders (issue 15, item 5)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tacit.db import Store
from tacit.ifllm.reader import Dataset
from tests.e2e.conftest import CpuWorker, Stack

pytestmark = pytest.mark.e2e


def _wait(client: httpx.Client, job_id: str, until: Any, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/imports/{job_id}").json()
        if until(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"import {job_id}: {job}")
        time.sleep(0.3)


def _question_ids(dataset: Dataset, keys: list[tuple[str, str]]) -> set[str]:
    return {f"ifllm-{q.query_id}" for key in keys for q in dataset.by_task.get(key, [])}


def test_a_restarted_import_resumes_after_the_folders_it_recorded(
    stack: Stack, cpu_worker: CpuWorker, ifllm_small: Path
) -> None:
    dataset = Dataset(ifllm_small)
    keys = [key for key, _ in dataset.task_dirs()]
    skip = len(keys) // 2
    assert 0 < skip < len(keys)
    cpu_worker.stop()
    try:
        with stack.client("admin") as client:
            job = client.post("/v1/imports/ifllm", json={"data": str(ifllm_small)}).json()
        assert job["status"] == "queued"
        # What a worker that died after recording its first `skip` folders leaves in the row (its message is
        # handed to the next worker: acks late).
        store = Store(stack.database_url)
        try:
            store.jobs.update_job(job["id"], status="running", stage="sessions", done=skip, total=len(keys))
        finally:
            store.close()
    finally:
        cpu_worker.start()
    with stack.client("admin") as client:
        job = _wait(client, job["id"], lambda j: j["status"] in ("succeeded", "failed"))
    assert job["status"] == "succeeded", job
    assert job["done"] == job["total"] == len(keys)
    resumed = _question_ids(dataset, keys[skip:])
    assert job["result"]["stored"] == len(resumed)
    store = Store(stack.database_url)
    try:
        assert all(store.sessions.get_session(sid) is not None for sid in resumed)
        assert all(store.sessions.get_session(sid) is None for sid in _question_ids(dataset, keys[:skip]))  # skipped
    finally:
        store.close()


def test_a_cancelled_import_stops_between_task_folders(stack: Stack, cpu_worker: CpuWorker, ifllm_dir: Path) -> None:
    dataset = Dataset(ifllm_dir)
    keys = [key for key, _ in dataset.task_dirs()]
    store = Store(stack.database_url)
    try:  # sessions an earlier test stored already
        before = {sid for sid in _question_ids(dataset, keys) if store.sessions.get_session(sid) is not None}
    finally:
        store.close()
    with stack.client("admin") as client:
        job = client.post("/v1/imports/ifllm", json={"data": str(ifllm_dir)}).json()
        job = _wait(client, job["id"], lambda j: j["status"] == "running" and j["done"] >= 1)
        answer = client.post(f"/v1/imports/{job['id']}/cancel")
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "cancelled"
        # the worker finishes the folder it is reading, records it, and stops: `done` no longer moves
        seen = answer.json()
        while True:
            time.sleep(2.0)
            job = client.get(f"/v1/imports/{job['id']}").json()
            if (job["done"], job["result"]) == (seen["done"], seen["result"]):
                break
            seen = job
        assert (job["status"], job["stage"]) == ("cancelled", "cancelled")
        assert 1 <= job["done"] < job["total"] == len(keys)
        counts = job["result"]
        assert sum(counts.values()) == len(_question_ids(dataset, keys[: job["done"]]))
        assert client.post(f"/v1/imports/{job['id']}/cancel").status_code == 202  # asking twice is harmless
    store = Store(stack.database_url)
    try:
        later = _question_ids(dataset, keys[job["done"] :]) - before
        assert later
        assert all(store.sessions.get_session(sid) is None for sid in later)  # never read
    finally:
        store.close()
