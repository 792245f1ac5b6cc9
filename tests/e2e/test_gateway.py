"""The gateway end to end, over HTTP only: ingest and score, idempotency, reads, erasure, outages, bad input."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tacit.db import Store
from tacit.ifllm.reader import Dataset
from tacit.ifllm.sessions import task_sessions
from tacit.simulate import simulate_session
from tests.e2e.conftest import CpuWorker, Stack

pytestmark = pytest.mark.e2e


def _session(user: str, seed: int = 1, **kw: Any) -> dict[str, Any]:
    session = simulate_session(seed=seed, samples=400, user_id=user, session_id=f"{user}-{seed}", **kw)
    return msgspec.to_builtins(session)


def _wait_scored(stack: Stack, session_id: str, timeout: float = 20) -> dict[str, Any]:
    with stack.client("read") as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = client.get(f"/v1/sessions/{session_id}").json()
            if record["score"]["status"] == "scored":
                return dict(record)
            time.sleep(0.2)
    raise AssertionError(f"{session_id} was not scored: {record}")


def test_ingest_score_read_and_erase(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    body = _session(user)
    with stack.client("ingest") as client:
        first = client.post("/v1/sessions", json=body)
        again = client.post("/v1/sessions", json=body)
    assert first.status_code == 200, first.text
    scored = first.json()
    assert scored["status"] == "scored"
    assert scored["session_id"] == body["session_id"]
    assert 0 <= scored["p_right"] <= 1
    assert scored["preferred"] in ("left", "right")
    assert scored["demo_model"] is True
    assert scored["model_version"]
    assert again.status_code == 200
    assert again.json()["session_id"] == body["session_id"]
    assert again.json()["created"] is False
    assert again.json()["p_right"] == scored["p_right"]

    with stack.client("read") as client:
        record = client.get(f"/v1/sessions/{body['session_id']}", params={"include": "payload"}).json()
        page = client.get("/v1/sessions", params={"user_id": user}).json()
    assert record["user_id"] == user
    assert record["session"]["responses"][0]["text"] == body["responses"][0]["text"]
    assert [item["session_id"] for item in page["items"]] == [body["session_id"]]

    store = Store(stack.database_url)
    try:
        assert sum(store.users.count_user_rows(user).values()) > 0
        with stack.client("admin") as client:
            erased = client.delete(f"/v1/users/{user}")
        assert erased.status_code == 200, erased.text
        assert sum(store.users.count_user_rows(user).values()) == 0
    finally:
        store.close()
    with stack.client("read") as client:
        assert client.get(f"/v1/sessions/{body['session_id']}").status_code == 404


def test_an_ifllm_pairwise_question_is_scored(stack: Stack, ifllm_dir: Path) -> None:
    # built as the importer builds it (tacit.ifllm.sessions.task_sessions): the import test below stores the same
    # questions, and a session built another way would be the same id with other content (a conflict)
    dataset = Dataset(ifllm_dir)
    session = next(
        s
        for key, folder in dataset.task_dirs()
        for s in task_sessions(dataset, key, folder)
        if s.mode == "pairwise" and any(r.mouse is not None and len(r.mouse.t_page_ms) for r in s.responses)
    )
    with stack.client("ingest") as client:
        response = client.post("/v1/sessions", content=msgspec.json.encode(session))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "scored"


def test_reward_service_down_session_stored_then_scored(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    body = _session(user, seed=3)
    stack.reward.stop()
    try:
        with stack.client("ingest") as client:
            response = client.post("/v1/sessions", json=body)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "pending"
        with stack.client("read") as client:
            assert client.get(f"/v1/sessions/{body['session_id']}").json()["score"]["status"] == "pending"
    finally:
        stack.reward.start()
    record = _wait_scored(stack, body["session_id"])
    assert record["score"]["p_right"] is not None


def test_keys_and_scopes(stack: Stack) -> None:
    body = _session(f"u-{uuid.uuid4().hex[:8]}", seed=4)
    import httpx

    with httpx.Client(base_url=stack.gateway.url) as anonymous:
        missing = anonymous.post("/v1/sessions", json=body)
        wrong = anonymous.post("/v1/sessions", json=body, headers={"Authorization": "Bearer nope"})
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/metrics").status_code == 200
    assert (missing.status_code, missing.json()["code"]) == (401, "unauthorized")
    assert (wrong.status_code, wrong.json()["code"]) == (401, "unauthorized")
    with stack.client("read") as reader:
        forbidden = reader.post("/v1/sessions", json=body)
        erase = reader.delete("/v1/users/someone")
    assert (forbidden.status_code, forbidden.json()["code"]) == (403, "forbidden")
    assert erase.status_code == 403


BAD: list[tuple[str, Any, str]] = [
    ("truncated JSON", b'{"session_id": "x", ', "$"),
    ("not JSON", b"hello", "$"),
    ("empty body", b"", "$"),
    ("array instead of object", b"[]", "$"),
    ("missing session_id", {"drop": "session_id"}, "session_id"),
    ("missing responses", {"drop": "responses"}, "responses"),
    ("unknown field", {"set": ("colour", "blue")}, "colour"),
    ("wrong mode", {"set": ("mode", "triple")}, "mode"),
    ("mode contradicts responses", {"set": ("mode", "pointwise")}, "responses"),
    ("empty session id", {"set": ("session_id", "")}, "session_id"),
    ("user id too long", {"set": ("user_id", "u" * 500)}, "user_id"),
    ("x not a number", {"stream": ("x", 0, "left")}, "responses[0].mouse.x[0]"),
    ("negative time", {"stream": ("t_page_ms", 0, -5.0)}, "responses[0].mouse.t_page_ms[0]"),
    ("time backwards", {"stream": ("t_page_ms", 5, 0.0)}, "responses[0].mouse.t_page_ms[5]"),
    ("index past the text", {"stream": ("char_index", 0, 10**6)}, "responses[0].mouse.char_index[0]"),
    ("index below -1", {"stream": ("char_index", 0, -7)}, "responses[0].mouse.char_index[0]"),
    ("head flag 7", {"stream": ("head_in_box", 0, 7)}, "responses[0].gaze.head_in_box[0]"),
    ("columns of unequal length", {"truncate": "y"}, "responses[0].mouse.y"),
    ("gaze without consent", {"set": ("consent", {"mouse": True, "gaze": False, "camera": True})}, "responses[0].gaze"),
    ("pairwise with a pointwise preference", {"set": ("feedback", {"preference": "current"})}, "feedback.preference"),
    ("likert 9", {"set": ("feedback", {"likert": [9]})}, "feedback.likert[0]"),
    ("calibration 150 %", {"set": ("calibration_accuracy", 150)}, "calibration_accuracy"),
    ("turn -1", {"set": ("turn", -1)}, "turn"),
    ("three responses", {"triple": True}, "responses"),
]


def _mutate(body: dict[str, Any], change: Any) -> bytes:
    if isinstance(change, bytes):
        return change
    body = msgspec.json.decode(msgspec.json.encode(body))
    if "drop" in change:
        del body[change["drop"]]
    if "set" in change:
        name, value = change["set"]
        body[name] = value
    if "stream" in change:
        column, index, value = change["stream"]
        stream = "gaze" if column == "head_in_box" else "mouse"
        body["responses"][0][stream][column][index] = value
    if "truncate" in change:
        body["responses"][0]["mouse"][change["truncate"]].pop()
    if change.get("triple"):
        body["responses"].append(body["responses"][0])
    return msgspec.json.encode(body)


@pytest.mark.parametrize(("case", "change", "field"), BAD, ids=[c for c, _, _ in BAD])
def test_malformed_sessions_are_refused_and_not_stored(stack: Stack, case: str, change: Any, field: str) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    body = _session(user, seed=5)
    with stack.client("ingest") as client:
        response = client.post("/v1/sessions", content=_mutate(body, change))
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
    problem = response.json()
    assert problem["field"] == field, (case, problem)
    assert problem["detail"]
    store = Store(stack.database_url)
    try:
        assert sum(store.users.count_user_rows(user).values()) == 0
    finally:
        store.close()


def test_import_an_ifllm_folder_then_every_question_is_scored(
    stack: Stack, ifllm_small: Path, cpu_worker: CpuWorker
) -> None:
    with stack.client("admin") as client:
        refused = client.post("/v1/imports/ifllm", json={"data": str(ifllm_small / "nowhere")})
        assert (refused.status_code, refused.json()["field"]) == (422, "data")
        job = client.post("/v1/imports/ifllm", json={"data": str(ifllm_small)}).json()
        deadline = time.monotonic() + 120
        while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.3)
            job = client.get(f"/v1/imports/{job['id']}").json()
    assert job["status"] == "succeeded", job
    assert job["done"] == job["total"] > 0
    stored = Dataset(ifllm_small).summary()["questions_with_behaviour"]
    assert job["result"]["stored"] + job["result"]["already_stored"] == stored
    with stack.client("read") as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            items = []
            cursor = None
            while True:
                page = client.get(
                    "/v1/sessions", params={"limit": 500, **({"cursor": cursor} if cursor else {})}
                ).json()
                items += [i for i in page["items"] if i["session_id"].startswith("ifllm-")]
                cursor = page["next_cursor"]
                if not cursor:
                    break
            statuses = {i["score"]["status"] for i in items}
            if len(items) >= stored and statuses <= {"scored", "failed"}:
                break
            time.sleep(0.5)
    scored = [i for i in items if i["score"]["status"] == "scored"]
    assert len(scored) >= stored * 0.9, statuses


def test_judgments_through_the_gateway(stack: Stack) -> None:
    pair = {
        "prompt": "What is a tide?",
        "answer_a": "The sea rises.",
        "answer_b": "The sea rises and falls twice a day.",
    }
    with stack.client("train") as client:
        verdict = client.post("/v1/judgments", json=pair)
        assert verdict.status_code == 200, verdict.text
        assert verdict.json()["winner"] == "B"  # the fake judge prefers the longer answer, in both orders
        assert verdict.json()["consistent"] is True
        job = client.post("/v1/judgments:batch", json={"items": [pair, pair], "evaluation": True})
        assert job.status_code == 202, job.text
        job_id = job.json()["job_id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with stack.client("read") as reader:
                response = reader.get(f"/v1/judgments/{job_id}")
            assert response.status_code == 200, response.text
            status = response.json()
            if status["status"] != "running":
                break
            time.sleep(0.2)
    assert status["status"] == "succeeded", status
    assert status["done"] == status["total"] == 2
    with stack.client("read") as reader:
        assert reader.post("/v1/judgments", json=pair).status_code == 403
