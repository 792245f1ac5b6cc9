"""Reward training from stored sessions through the gateway, against named doubles of feature_svc and reward_svc:
the selection and its 4xx, the rows sent, the users recorded, out-of-fold scores on activation, erasure."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.keys import create_key
from gateway.settings import GatewaySettings
from tacit.db import OutOfFold, Store
from tacit.schemas import FeatureVector, FeatureVectors
from tacit.simulate import simulate_session

USERS, PER_USER = 6, 4


class FeatureDouble:
    """feature_svc: a two-feature `all` vector per session (batch and single)."""

    def __init__(self) -> None:
        self.batches = 0

    @staticmethod
    def _vector(session: dict[str, Any]) -> FeatureVector:
        return FeatureVector(
            session_id=session["session_id"],
            feature_set="all",
            feature_set_version="1.pairwise.x",
            names=["a", "b"],
            values=[float(len(session["session_id"])), 0.5],
            samples=10,
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = msgspec.json.decode(request.content)
        if request.url.path == "/v1/features:batch":
            self.batches += 1
            vectors = [self._vector(s) for s in body["sessions"]]
            answer = FeatureVectors(
                feature_set="all", feature_set_version="1.pairwise.x", names=["a", "b"], vectors=vectors
            )
            return httpx.Response(200, content=msgspec.json.encode(answer))
        return httpx.Response(200, content=msgspec.json.encode(self._vector(body["session"])))


class RewardDouble:
    """reward_svc: accepts training sets, knows one model's training set, erases training rows."""

    def __init__(self) -> None:
        self.trained: list[dict[str, Any]] = []
        self.members: list[dict[str, Any]] = []
        self.erased: list[str] = []
        self.active_elsewhere = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/reward/models:sessions":
            body = msgspec.json.decode(request.content)
            self.trained.append(body)
            self.members = [
                {
                    "session_id": r["session_id"],
                    "user_id": r["user_id"],
                    "content_hash": r["content_hash"],
                    "label": r["label"],
                    "p_out_of_fold": 0.25,
                }
                for r in body["rows"]
            ]
            return httpx.Response(202, json={"id": "m-sessions", "status": "queued"})
        if path == "/v1/reward/models/m-sessions/activate":
            return httpx.Response(200, json={"id": "m-sessions", "active": True})
        if path == "/v1/reward/models/m-sessions/training-set":
            return httpx.Response(
                200, json={"model_id": "m-sessions", "task": "pairwise", "demo": False, "members": self.members}
            )
        if path == "/v1/reward/training-rows":
            self.erased.append(request.url.params["user_id"])
            return httpx.Response(200, json={"rows_deleted": PER_USER, "models_affected": ["m-sessions"]})
        if path == "/v1/reward/models":
            active = self.active_elsewhere and request.url.params.get("task") == "pairwise"
            return httpx.Response(
                200, json=[{"id": "m-sessions", "active": True, "feature_set": "all"}] if active else []
            )
        return httpx.Response(409, json={"code": "no_model", "field": "mode", "detail": "no active model"})


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def stored(database: str) -> dict[str, str]:
    """USERS users with PER_USER labelled pairwise sessions each (both labels), one unlabelled, one demo; keys."""
    store = Store(database)
    store.migrate()
    try:
        for u in range(USERS):
            for k in range(PER_USER):
                session = simulate_session(
                    seed=10 * u + k,
                    samples=20,
                    user_id=f"t-u{u}",
                    session_id=f"t-u{u}-{k}",
                    prefer="right" if (u + k) % 2 else "left",
                )
                store.sessions.put_session(session)
        store.sessions.put_session(
            simulate_session(seed=99, samples=20, user_id="t-u0", session_id="t-quiet", feedback=False)
        )
        store.sessions.put_session(
            simulate_session(seed=98, samples=20, user_id="t-demo", session_id="t-demo-0"), demo=True
        )
        return {scope: create_key(store, [scope])[0] for scope in ("train", "admin", "read")}
    finally:
        store.close()


@pytest.fixture
def doubles() -> tuple[FeatureDouble, RewardDouble]:
    return FeatureDouble(), RewardDouble()


@pytest.fixture
def client(
    database: str, stored: dict[str, str], doubles: tuple[FeatureDouble, RewardDouble]
) -> Iterator[TestClient[Litestar]]:
    features, reward = doubles
    settings = GatewaySettings(database_url=database, retries=0, timeout_s=1, rescore_interval_s=3600)
    app = create_app(
        settings, feature_transport=httpx.MockTransport(features), reward_transport=httpx.MockTransport(reward)
    )
    with TestClient(app) as test_client:
        test_client.headers["Authorization"] = f"Bearer {stored['admin']}"
        yield test_client


def _train(client: TestClient[Litestar], **source: Any) -> httpx.Response:
    return client.post("/v1/reward/models", json={"source": {"kind": "sessions", **source}, "seeds": 1})


def test_stored_sessions_become_a_training_set_and_its_users_are_recorded(
    client: TestClient[Litestar], doubles: tuple[FeatureDouble, RewardDouble]
) -> None:
    features, reward = doubles
    answer = _train(client)
    assert answer.status_code == 202, answer.text
    [sent] = reward.trained
    rows = sent["rows"]
    # the labelled, non-demo pairwise sessions; the unlabelled one and the demo one are left out
    assert sorted(r["session_id"] for r in rows) == sorted(f"t-u{u}-{k}" for u in range(USERS) for k in range(PER_USER))
    assert {r["label"] for r in rows} == {0, 1}
    assert (sent["feature_set"], sent["names"]) == ("all", ["a", "b"])
    store: Store = client.app.state.store
    row = store.sessions.get_session("t-u1-0")
    assert row is not None
    assert next(r for r in rows if r["session_id"] == "t-u1-0")["content_hash"] == row.payload_sha256
    assert features.batches == 1
    # the users are on record with the model: erasing one names it, with reward_svc's own part
    erased = client.delete("/v1/users/t-u2").json()
    assert erased["models_affected"] == ["m-sessions"]
    assert erased["rows_deleted"]["reward_training_rows"] == PER_USER
    assert erased["not_erased"] == []
    assert reward.erased == ["t-u2"]


def test_activation_gives_the_training_sessions_their_out_of_fold_scores(
    client: TestClient[Litestar], doubles: tuple[FeatureDouble, RewardDouble]
) -> None:
    assert _train(client).status_code == 202
    assert client.post("/v1/reward/models/m-sessions/activate").status_code == 200
    score = client.get("/v1/sessions/t-u3-1").json()["score"]
    assert (score["status"], score["score_kind"], score["model_version"]) == ("scored", "out_of_fold", "m-sessions")
    assert score["p_right"] == pytest.approx(0.25)
    assert score["p_right_population"] == pytest.approx(0.25)
    assert (score["preferred"], score["user_labels_used"]) == ("left", 0)
    quiet = client.get("/v1/sessions/t-quiet").json()["score"]
    assert quiet["score_kind"] is None  # not in the training set: not touched


@pytest.mark.parametrize(
    ("source", "status", "field", "words"),
    [
        ({"user_ids": ["t-u0", "nobody", "ghost"]}, 422, "source.user_ids", "no stored sessions of ghost, nobody"),
        ({"since": "2999-01-01T00:00:00Z"}, 422, "source.since", "none of the 26 pairwise sessions"),
        ({"since": "2999-01-01T00:00:00"}, 422, "source.since", "2999-01-01T00:00:00+00:00"),  # naive: UTC
        ({"until": "2000-01-01T00:00:00Z"}, 422, "source.until", "received before"),
        ({"labelled": False}, 422, "source.labelled", "has an explicit label"),
        ({"user_ids": ["t-demo"]}, 422, "source.include_demo", "demo token"),
        ({"user_ids": ["t-u0", "t-u1", "t-u2"]}, 422, "source", "12 labelled sessions of 3 users"),
        ({"mode": "pointwise"}, 422, "source.mode", "the model's task"),
        ({"bogus": 1}, 422, "source.bogus", "unknown field"),
    ],
)
def test_bad_selections_are_refused_naming_the_field_and_nothing_is_written(
    client: TestClient[Litestar],
    doubles: tuple[FeatureDouble, RewardDouble],
    source: dict[str, Any],
    status: int,
    field: str,
    words: str,
) -> None:
    _, reward = doubles
    answer = _train(client, **source)
    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field
    assert words in answer.json()["detail"]
    assert reward.trained == []
    assert client.delete("/v1/users/t-u0").json()["models_affected"] == ["m-sessions"]  # the double's answer only
    store: Store = client.app.state.store
    assert store.users.count_user_rows("t-u1")["training_sets"] == 0


def test_a_pointwise_selection_with_no_pointwise_sessions_names_the_task(client: TestClient[Litestar]) -> None:
    answer = client.post("/v1/reward/models", json={"source": {"kind": "sessions"}, "task": "pointwise"})
    assert (answer.status_code, answer.json()["field"]) == (422, "task")
    assert "no stored pointwise sessions" in answer.json()["detail"]


def test_one_label_only_is_refused_with_the_counts(database: str, client: TestClient[Litestar]) -> None:
    store: Store = client.app.state.store
    for u in range(USERS):
        for k in range(PER_USER):
            session = simulate_session(seed=k, samples=20, user_id=f"o-u{u}", session_id=f"o-u{u}-{k}", prefer="left")
            store.sessions.put_session(session)
    answer = _train(client, user_ids=[f"o-u{u}" for u in range(USERS)])
    assert (answer.status_code, answer.json()["field"]) == (422, "source")
    assert "label 0: 24, label 1: 0" in answer.json()["detail"]


def test_erasure_finishes_the_gateway_part_when_reward_svc_is_down(database: str, stored: dict[str, str]) -> None:
    settings = GatewaySettings(
        database_url=database, reward_url="http://127.0.0.1:9", retries=0, timeout_s=1, rescore_interval_s=3600
    )
    store = Store(database)
    store.users.record_training_set("m-old", ["t-u4"])
    store.close()
    with TestClient(create_app(settings)) as client:
        erased = client.delete("/v1/users/t-u4", headers={"Authorization": f"Bearer {stored['admin']}"}).json()
    assert erased["models_affected"] == ["m-old"]
    assert erased["rows_deleted"]["sessions"] == PER_USER
    assert erased["not_erased"]


def test_out_of_fold_scores_skip_sessions_stored_again_with_other_content(
    database: str, stored: dict[str, str]
) -> None:
    store = Store(database)
    try:
        row = store.sessions.get_session("t-u0-1")
        assert row is not None
        members = [OutOfFold("t-u0-0", "not-the-hash", 0.9), OutOfFold("t-u0-1", row.payload_sha256, 0.9)]
        assert store.scores.apply_out_of_fold("m", False, members) == 1
        # a model trained from an IFLLM folder records no content hash: matched by id
        assert store.scores.apply_out_of_fold("m", False, [OutOfFold("t-u0-2", "", 0.3)]) == 1
        assert store.sessions.get_session("t-u0-0").score_kind is None  # type: ignore[union-attr]
        assert store.sessions.get_session("t-u0-1").score_kind == "out_of_fold"  # type: ignore[union-attr]
        candidates = store.sessions.training_candidates("pairwise", ["t-u0"])
        assert [c.session_id for c in candidates] == sorted([*(f"t-u0-{k}" for k in range(PER_USER)), "t-quiet"])
        assert store.sessions.users_with_sessions(["t-u0", "x"]) == {"t-u0"}
        assert all(c.received_at <= dt.datetime.now(dt.UTC) for c in candidates)
    finally:
        store.close()


def test_pointwise_sessions_are_vectorised_one_by_one_with_their_previous_turn(
    client: TestClient[Litestar], doubles: tuple[FeatureDouble, RewardDouble]
) -> None:
    features, reward = doubles
    store: Store = client.app.state.store
    for u in range(USERS):
        for k in range(PER_USER):
            session = simulate_session(
                seed=k,
                samples=20,
                mode="pointwise",
                user_id=f"p-u{u}",
                task_id=f"p-t{u}",
                session_id=f"p-u{u}-{k}",
                prefer="current" if (u + k) % 2 else "previous",
            )
            store.sessions.put_session(msgspec.structs.replace(session, turn=k))
    answer = client.post("/v1/reward/models", json={"source": {"kind": "sessions"}, "task": "pointwise"})
    assert answer.status_code == 202, answer.text
    assert features.batches == 0
    assert len(reward.trained[0]["rows"]) == USERS * PER_USER


def test_a_model_activated_elsewhere_gets_its_training_sessions_scored_out_of_fold(
    database: str, stored: dict[str, str], doubles: tuple[FeatureDouble, RewardDouble]
) -> None:
    # e.g. a training request with "activate": true: reward_svc activates it when the job ends, not the gateway
    features, reward = doubles
    settings = GatewaySettings(database_url=database, retries=0, timeout_s=1, rescore_interval_s=0.05)
    app = create_app(
        settings, feature_transport=httpx.MockTransport(features), reward_transport=httpx.MockTransport(reward)
    )
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {stored['admin']}"
        assert _train(client).status_code == 202
        reward.active_elsewhere = True
        store: Store = client.app.state.store
        deadline = time.monotonic() + 20
        while (row := store.sessions.get_session("t-u5-3")) is None or row.score_kind != "out_of_fold":
            assert time.monotonic() < deadline, "the training sessions were not scored out of fold"
            time.sleep(0.05)
