"""The reward loop on the users' own data, through the gateway only: simulated users post labelled sessions, a model
is trained from them (a real Celery worker on the `cpu` queue) and activated, its training sessions carry
out-of-fold scores, erasing a user names the model, and bad selections answer 4xx naming the field."""

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

USERS, PER_USER = 8, 4


@pytest.fixture(scope="module")
def users(stack: Stack) -> list[str]:
    """USERS simulated readers who each post PER_USER labelled sessions (both preferences), one also an unlabelled
    one, through the ingest API."""
    prefix = f"loop-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-u{u}" for u in range(USERS)]
    sessions = [
        simulate_session(
            seed=1000 * u + k,
            samples=300,
            user_id=user,
            session_id=f"{user}-s{k}",
            prefer="right" if (u + k) % 2 else "left",
        )
        for u, user in enumerate(names)
        for k in range(PER_USER)
    ]
    sessions.append(
        simulate_session(seed=7, samples=300, user_id=names[0], session_id=f"{names[0]}-quiet", feedback=False)
    )
    with stack.client("ingest") as client:
        answer = client.post("/v1/sessions:batch", content=msgspec.json.encode({"sessions": sessions}))
    assert answer.status_code == 200, answer.text
    return names


def _train(client: httpx.Client, source: dict[str, Any], **spec: Any) -> httpx.Response:
    return client.post("/v1/reward/models", json={"source": {"kind": "sessions", **source}, **spec})


def _wait_trained(client: httpx.Client, model_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info: dict[str, Any] = client.get(f"/v1/reward/models/{model_id}").json()
        if info["status"] in ("succeeded", "failed"):
            return info
        time.sleep(0.5)
    raise AssertionError(f"model {model_id} still {info['status']} after {timeout} s")


def test_bad_selections_answer_4xx_naming_the_field(stack: Stack, users: list[str]) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"user_ids": [users[0], "nobody-at-all"]}, "source.user_ids", "nobody-at-all"),
        ({"user_ids": users, "since": "2999-01-01T00:00:00Z"}, "source.since", "received at or after"),
        ({"user_ids": users, "labelled": False}, "source.labelled", "explicit label"),
        ({"user_ids": users[:2]}, "source", "8 labelled sessions of 2 users"),
    ]
    with stack.client("admin") as client:
        before = client.get("/v1/reward/models").json()
        for source, field, words in cases:
            answer = _train(client, source, seeds=1)
            assert answer.status_code == 422, (source, answer.text)
            assert answer.json()["field"] == field, answer.json()
            assert words in answer.json()["detail"]
        assert client.get("/v1/reward/models").json() == before  # nothing half-written


def test_a_model_trained_on_stored_sessions_scores_them_out_of_fold_and_erasure_names_it(
    stack: Stack, users: list[str], cpu_worker: CpuWorker
) -> None:
    with stack.client("admin") as client:
        answer = _train(client, {"user_ids": users}, model="swap_lr", seeds=2)
        assert answer.status_code == 202, answer.text
        model_id = answer.json()["id"]
        info = _wait_trained(client, model_id)
        assert info["status"] == "succeeded", info["error"]
        summary = info["training_set"]
        assert (summary["source"], summary["sessions"], summary["users"]) == ("sessions", USERS * PER_USER, USERS)
        assert summary["labels"] == {"0": USERS * PER_USER // 2, "1": USERS * PER_USER // 2}
        listing = client.get("/v1/reward/models").text
        assert all(user not in listing for user in users)  # counts in public listings, never ids
        assert client.post(f"/v1/reward/models/{model_id}/activate").status_code == 200

    with stack.client("read") as client:
        scores = [client.get(f"/v1/sessions/{user}-s{k}").json()["score"] for user in users for k in range(PER_USER)]
        quiet = client.get(f"/v1/sessions/{users[0]}-quiet").json()["score"]
    assert {(s["status"], s["model_version"], s["score_kind"]) for s in scores} == {("scored", model_id, "out_of_fold")}
    assert all(s["user_labels_used"] == 0 and s["p_right"] == s["p_right_population"] for s in scores)
    assert quiet["score_kind"] != "out_of_fold"  # not in the training set (no label)

    with stack.client("ingest") as client:
        # a re-posted training session is still answered out of fold; a new one is scored by the model itself
        again = simulate_session(seed=0, samples=300, user_id=users[0], session_id=f"{users[0]}-s0", prefer="left")
        assert client.post("/v1/sessions", content=msgspec.json.encode(again)).json()["score_kind"] == "out_of_fold"
        fresh = simulate_session(seed=5, samples=300, user_id=f"{users[0]}-new", session_id=f"{users[0]}-fresh")
        answer = client.post("/v1/sessions", content=msgspec.json.encode(fresh)).json()
        assert (answer["model_version"], answer["score_kind"]) == (model_id, "model")

    with stack.client("admin") as client:
        erased = client.delete(f"/v1/users/{users[1]}").json()
        assert model_id in erased["models_affected"]
        assert erased["rows_deleted"]["reward_training_rows"] == PER_USER
        assert erased["rows_deleted"]["sessions"] == PER_USER
        assert erased["not_erased"] == []
        # the model's record still says what it learned from: the counts stay
        assert client.get(f"/v1/reward/models/{model_id}").json()["training_set"]["users"] == USERS
