"""The rescoring loop and the batch route against named test doubles of feature_svc and reward_svc.

Replays issue 14's finding 3 (one session the reward service refuses stopped the loop: 665 of 672 imported
sessions stayed pending) and finding 13 (a batch answered 409 after storing its earlier items).
"""

from __future__ import annotations

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
from tacit.db import Store
from tacit.schemas import FeatureVector, Score
from tacit.simulate import simulate_session


class FeatureDouble:
    """feature_svc: a fixed two-feature vector for any session."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = msgspec.json.decode(request.content)
        vector = FeatureVector(
            session_id=body["session"]["session_id"],
            feature_set="all",
            feature_set_version="1",
            names=["a", "b"],
            values=[0.5, 0.25],
        )
        return httpx.Response(200, content=msgspec.json.encode(vector))


class RewardDouble:
    """reward_svc with an active pairwise model only, until `pointwise` is switched on (an activation)."""

    def __init__(self) -> None:
        self.pointwise = False
        self.refusals = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/reward/models":
            return httpx.Response(200, json=[])
        if path.endswith("/activate"):
            self.pointwise = True
            return httpx.Response(200, json={"id": "m-point", "active": True})
        assert path == "/v1/score", path
        body = msgspec.json.decode(request.content)
        if body["mode"] == "pointwise" and not self.pointwise:
            self.refusals += 1
            problem = {
                "code": "no_model",
                "field": "mode",
                "detail": "no active pointwise reward model: train and activate one first",
            }
            return httpx.Response(409, json=problem)
        scores = [
            Score(
                session_id=v["session_id"],
                p=0.7,
                preferred="right" if body["mode"] == "pairwise" else "current",
                confidence=0.4,
                abstained=False,
                quality=None,
                model_id=f"m-{body['mode']}",
                demo=False,
            )
            for v in body["vectors"]
        ]
        return httpx.Response(200, content=msgspec.json.encode({"scores": scores}))


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def keys(database: str) -> dict[str, str]:
    store = Store(database)
    store.migrate()
    try:
        return {scope: create_key(store, [scope])[0] for scope in ("ingest", "read", "train")}
    finally:
        store.close()


def _app(database: str, reward: RewardDouble, **kw: Any) -> Litestar:
    settings = GatewaySettings(database_url=database, retries=0, timeout_s=1, **kw)
    return create_app(
        settings, feature_transport=httpx.MockTransport(FeatureDouble()), reward_transport=httpx.MockTransport(reward)
    )


def _wait(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_session_the_reward_service_refuses_never_blocks_the_others(database: str, keys: dict[str, str]) -> None:
    # Stored while the services were "down" (as an import stores them): 8 pointwise sessions first, then 120
    # pairwise ones, more than one pass of the loop (50) takes.
    store = Store(database)
    try:
        for i in range(8):
            store.sessions.put_session(simulate_session(seed=i, samples=20, mode="pointwise", session_id=f"point-{i}"))
        for i in range(120):
            store.sessions.put_session(simulate_session(seed=i, samples=20, session_id=f"pair-{i}"))
    finally:
        store.close()
    reward = RewardDouble()
    read = {"Authorization": f"Bearer {keys['read']}"}
    with TestClient(_app(database, reward, rescore_interval_s=0.05, rescore_defer_s=3600)) as client:
        state = client.app.state

        def pending() -> int:
            return len(state.store.scores.pending(1000))

        _wait(lambda: pending() == 0)  # every session is either scored or set aside
        for i in range(120):
            assert state.store.sessions.get_session(f"pair-{i}").score_status == "scored"
        record = client.get("/v1/sessions/point-3", headers=read).json()
        assert record["score"]["status"] == "pending"
        assert "no active pointwise reward model" in record["score"]["pending_reason"]
        assert reward.refusals <= 2  # one refusal per pass sets every pointwise session of that pass aside
        scored = client.get("/v1/sessions/pair-7", headers=read).json()["score"]
        assert (scored["status"], scored["pending_reason"]) == ("scored", None)
        # A model for the mode is activated: the sessions set aside are due at once, not after rescore_defer_s.
        activated = client.post(
            "/v1/reward/models/m-point/activate", headers={"Authorization": f"Bearer {keys['train']}"}
        )
        assert activated.status_code == 200
        _wait(lambda: all(state.store.sessions.get_session(f"point-{i}").score_status == "scored" for i in range(8)))


def test_a_batch_with_a_conflict_stores_nothing_and_names_the_item(database: str, keys: dict[str, str]) -> None:
    reward = RewardDouble()
    ingest = {"Authorization": f"Bearer {keys['ingest']}"}
    sessions = [simulate_session(seed=i, samples=20, session_id=f"b-{i}") for i in range(4)]
    with TestClient(_app(database, reward, rescore_interval_s=3600)) as client:
        assert client.post("/v1/sessions", content=msgspec.json.encode(sessions[2]), headers=ingest).status_code == 200
        changed = simulate_session(seed=99, samples=20, session_id="b-2")  # same id, other content
        batch = [sessions[0], sessions[1], changed, sessions[3]]
        response = client.post("/v1/sessions:batch", content=msgspec.json.encode({"sessions": batch}), headers=ingest)
        assert response.status_code == 409
        assert response.json()["field"] == "sessions[2].session_id"
        assert "nothing was stored" in response.json()["detail"]
        state = client.app.state
        assert [state.store.sessions.get_session(f"b-{i}") is None for i in range(4)] == [True, True, False, True]
        # Two items of one batch with one id and different content: the second is named, nothing stored.
        twice = [sessions[0], simulate_session(seed=98, samples=20, session_id="b-0")]
        response = client.post("/v1/sessions:batch", content=msgspec.json.encode({"sessions": twice}), headers=ingest)
        assert (response.status_code, response.json()["field"]) == (409, "sessions[1].session_id")
        assert state.store.sessions.get_session("b-0") is None
        # The same batch without the conflict is stored whole; posting it again is idempotent.
        batch[2] = sessions[2]
        for created in (True, False):
            response = client.post(
                "/v1/sessions:batch", content=msgspec.json.encode({"sessions": batch}), headers=ingest
            )
            assert response.status_code == 200, response.text
            results = response.json()["results"]
            assert [r["session_id"] for r in results] == [f"b-{i}" for i in range(4)]
            assert [r["created"] for r in results] == [created, created, False, created]


@pytest.fixture
def secure_store(tmp_path: Path) -> Iterator[tuple[Store, Path]]:
    path = tmp_path / "erase.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    yield store, path
    store.close()


def test_erasure_leaves_no_copy_in_the_sqlite_file_or_wal(secure_store: tuple[Store, Path]) -> None:
    # Finding 7: deleted rows lingered in the SQLite file and WAL until a checkpoint.
    store, path = secure_store
    marker = "erase-me-7f3a9c"
    for i in range(20):
        store.sessions.put_session(simulate_session(seed=i, samples=20, user_id=marker, session_id=f"{marker}.s{i}"))
    store.sessions.put_session(simulate_session(seed=50, samples=20, user_id="keep-me", session_id="keep.s1"))
    files = [path, path.with_name(path.name + "-wal")]
    assert any(marker.encode() in f.read_bytes() for f in files if f.exists())
    assert store.users.erase_user(marker).rows_deleted["sessions"] == 20
    for f in files:
        if f.exists():
            assert marker.encode() not in f.read_bytes(), f.name
    assert store.sessions.get_session("keep.s1") is not None
