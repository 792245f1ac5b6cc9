"""Issue 15's acceptance, through the gateway only (real processes, SQLite and PostgreSQL, real Redis and a cpu
worker): 20 simulated users post 400 labelled sessions; a model trained from them and activated scores every one
(its training sessions out of fold) through the backfill its activation starts; a second model scores the same
sessions through a rescoring job and the two are compared; erasing a user names both; nothing stays pending."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import msgspec
import pytest

from tacit.simulate import simulate_session
from tests.e2e.conftest import CpuWorker, Stack

pytestmark = pytest.mark.e2e

USERS, PER_USER = 20, 20


@pytest.fixture(scope="module")
def users(stack: Stack) -> list[str]:
    prefix = f"spm-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-u{u:02d}" for u in range(USERS)]
    sessions = [
        simulate_session(
            seed=100 * u + k,
            samples=120,
            user_id=user,
            session_id=f"{user}-s{k:02d}",
            task_id=f"{user}-t{k // 4}",
            prefer="right" if (u + k) % 2 else "left",
        )
        for u, user in enumerate(names)
        for k in range(PER_USER)
    ]
    with stack.client("ingest") as client:
        for start in range(0, len(sessions), 200):
            chunk = sessions[start : start + 200]
            answer = client.post("/v1/sessions:batch", content=msgspec.json.encode({"sessions": chunk}))
            assert answer.status_code == 200, answer.text
    return names


def _wait(client: httpx.Client, path: str, done: tuple[str, ...], timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(path).json()
        if body["status"] in done:
            return body
        assert time.monotonic() < deadline, f"{path} still {body['status']} after {timeout} s: {body}"
        time.sleep(0.5)


def _train(client: httpx.Client, users: list[str], **spec: Any) -> str:
    answer = client.post(
        "/v1/reward/models", json={"source": {"kind": "sessions", "user_ids": users}, "seeds": 1, **spec}
    )
    assert answer.status_code == 202, answer.text
    model_id = str(answer.json()["id"])
    info = _wait(client, f"/v1/reward/models/{model_id}", ("succeeded", "failed", "cancelled"))
    assert info["status"] == "succeeded", info["error"]
    return model_id


def _records(client: httpx.Client, users: list[str]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for user in users:
        page = client.get("/v1/sessions", params={"user_id": user, "limit": 500}).json()
        records.extend(page["items"])
    return records


def test_two_models_score_every_session_and_compare_on_the_same_ones(
    stack: Stack, users: list[str], cpu_worker: CpuWorker
) -> None:
    with stack.client("admin") as client:
        first = _train(client, users, model="swap_lr")
        assert client.post(f"/v1/reward/models/{first}/activate").status_code == 200
        # the activation started a backfill of every pairwise session the model has not scored
        job = client.get("/v1/reward/rescores").json()[0]
        job = _wait(client, f"/v1/reward/rescores/{job['id']}", ("succeeded", "failed", "cancelled"))
        assert job["status"] == "succeeded", job
        assert job["done"] == job["total"]
        assert job["result"]["failed"] == 0

        records = _records(client, users)
        assert len(records) == USERS * PER_USER
        kinds = {(r["score"]["status"], r["score"]["model_version"], r["score"]["score_kind"]) for r in records}
        assert kinds == {("scored", first, "out_of_fold")}  # every one is a training session: never in-sample

        second = _train(client, users, model="swap_et")
        answer = client.post(f"/v1/reward/models/{second}/rescore", json={"user_ids": users})
        assert answer.status_code == 202, answer.text
        job = _wait(client, f"/v1/reward/rescores/{answer.json()['id']}", ("succeeded", "failed", "cancelled"))
        assert (job["status"], job["done"], job["result"]["failed"]) == ("succeeded", USERS * PER_USER, 0), job

        compared = client.get(f"/v1/reward/models/{first}/compare/{second}").json()
        assert compared["sessions_both"] >= USERS * PER_USER
        assert compared["labelled"] >= USERS * PER_USER
        assert compared["out_of_fold_a"] >= USERS * PER_USER
        assert compared["out_of_fold_b"] >= USERS * PER_USER
        assert 0.0 <= compared["agreement"] <= 1.0
        assert compared["accuracy_a"] > 0.5  # simulated readers' behaviour follows their choice

        one = client.get(f"/v1/sessions/{users[3]}-s05", params={"include": "scores"}).json()
        assert {s["model_id"] for s in one["scores"]} >= {first, second}
        assert one["score"]["model_version"] == first  # the current score follows the active model only

        # a second backfill of the same model finds nothing to do (idempotent per session and model)
        again = client.post(f"/v1/reward/models/{second}/rescore", json={"user_ids": users}).json()
        assert (again["status"], again["total"]) == ("succeeded", 0)

        erased = client.delete(f"/v1/users/{users[0]}").json()
        assert {first, second} <= set(erased["models_affected"])
        assert erased["rows_deleted"]["session_scores"] >= 2 * PER_USER

        left = _records(client, users[1:])
        assert all(r["score"]["status"] == "scored" for r in left)  # no session pending
