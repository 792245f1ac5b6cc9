"""Per-user adaptation through the gateway: a user's explicit labels change their later scores, both probabilities
are answered, and erasing the user removes the state (it lives in their sessions)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest

from tacit.simulate import simulate_session
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


def _probe(user: str, name: str) -> dict[str, Any]:
    # the same reading (seed 7, read like a right-preferrer) under a new session id: the same population score
    session = simulate_session(
        seed=7, samples=400, user_id=user, session_id=f"{user}-{name}", prefer="right", feedback=False
    )
    return msgspec.to_builtins(session)


def _labelled_left(user: str, seed: int) -> dict[str, Any]:
    # reads like someone who prefers the right answer, then says "left": a side habit the content does not explain
    body = msgspec.to_builtins(
        simulate_session(seed=100 + seed, samples=400, user_id=user, session_id=f"{user}-l{seed}", prefer="right")
    )
    body["feedback"]["preference"] = "left"
    return body


def test_labels_adapt_later_scores_and_erasure_removes_the_state(stack: Stack) -> None:
    user = f"adapt-{uuid.uuid4().hex[:8]}"
    with stack.client("ingest") as client:
        cold = client.post("/v1/sessions", json=_probe(user, "p0")).json()
        assert cold["status"] == "scored", cold
        assert cold["user_labels_used"] == 0
        assert cold["p_right"] == pytest.approx(cold["p_right_population"])
        labelled = [client.post("/v1/sessions", json=_labelled_left(user, i)).json() for i in range(6)]
        # each labelled session was scored with the labels before it (never its own)
        assert [s["user_labels_used"] for s in labelled] == list(range(6))
        warm = client.post("/v1/sessions", json=_probe(user, "p1")).json()
    assert warm["user_labels_used"] == 6
    assert warm["p_right_population"] == pytest.approx(cold["p_right_population"], abs=1e-9)
    # six "left" answers against right-leaning reading: the user's habit wins over the population model
    assert warm["p_right"] < warm["p_right_population"] - 0.2
    assert warm["preferred"] == "left"

    with stack.client("read") as client:
        record = client.get(f"/v1/sessions/{user}-p1").json()
    assert record["score"]["user_labels_used"] == 6
    assert record["score"]["p_right"] == pytest.approx(warm["p_right"])

    with stack.client("admin") as client:
        assert client.delete(f"/v1/users/{user}").status_code == 200
    with stack.client("ingest") as client:
        again = client.post("/v1/sessions", json=_probe(user, "p2")).json()
    assert again["user_labels_used"] == 0  # the state went with the user's sessions
    assert again["p_right"] == pytest.approx(again["p_right_population"])


def test_another_users_labels_do_not_move_a_score(stack: Stack) -> None:
    user, other = f"adapt-{uuid.uuid4().hex[:8]}", f"adapt-{uuid.uuid4().hex[:8]}"
    with stack.client("ingest") as client:
        for i in range(4):
            assert client.post("/v1/sessions", json=_labelled_left(other, i)).status_code == 200
        mine = client.post("/v1/sessions", json=_probe(user, "p0")).json()
    assert mine["user_labels_used"] == 0
    assert mine["p_right"] == pytest.approx(mine["p_right_population"])


def test_an_abstaining_score_says_why(stack: Stack) -> None:
    user = f"abst-{uuid.uuid4().hex[:8]}"
    empty = msgspec.to_builtins(simulate_session(seed=3, samples=0, user_id=user, session_id=f"{user}-empty"))
    with stack.client("ingest") as client:
        nothing = client.post("/v1/sessions", json=empty).json()
        normal = client.post("/v1/sessions", json=_probe(user, "p0")).json()
    assert nothing["abstained"] is True
    assert nothing["abstain_reason"] == "no_behaviour_samples"
    assert (normal["abstain_reason"] is None) == (normal["abstained"] is False)
    with stack.client("read") as client:
        stored = client.get(f"/v1/sessions/{user}-empty").json()["score"]
    assert stored["abstain_reason"] == "no_behaviour_samples"


def test_the_adaptation_prior_follows_the_people_scored_and_forgets_the_erased(stack: Stack) -> None:
    with stack.client("read") as client:
        models = client.get("/v1/reward/models", params={"task": "pairwise"}).json()
        [active] = [m for m in models if m["active"]]

        def adaptation() -> dict[str, Any]:
            answer = client.get(f"/v1/reward/models/{active['id']}/adaptation")
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        before = adaptation()
        users = [f"pop-{uuid.uuid4().hex[:8]}" for _ in range(3)]
        with stack.client("ingest") as ingest:
            for user in users:
                for i in range(4):
                    assert ingest.post("/v1/sessions", json=_labelled_left(user, i)).status_code == 200
        after = adaptation()
        assert after["model_id"] == active["id"]
        assert (after["labels"], after["users"]) == (before["labels"] + 12, before["users"] + 3)
        assert after["habit_weight"] >= after["training_habit_weight"]  # never below the training users' weight
        with stack.client("admin") as admin:
            assert admin.delete(f"/v1/users/{users[0]}").status_code == 200
        erased = adaptation()
        assert (erased["labels"], erased["users"]) == (after["labels"] - 4, after["users"] - 1)
        assert client.get("/v1/reward/models/nope/adaptation").status_code == 404
