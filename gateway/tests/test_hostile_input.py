"""Hostile request bodies and parameters get a 4xx naming the problem, and no traceback is logged for them.

Replays of issue 14's probes (findings 7, 16), in-process, bounded in count.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.keys import create_key
from gateway.settings import GatewaySettings
from tacit.db import Store
from tacit.schemas.align import DataSummary
from tacit.simulate import simulate_session

DOWN = "http://127.0.0.1:9"


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def admin(database: str) -> str:
    store = Store(database)
    store.migrate()
    try:
        return create_key(store, ["admin"])[0]
    finally:
        store.close()


@pytest.fixture
def client(database: str, admin: str) -> Iterator[TestClient[Litestar]]:
    settings = GatewaySettings(
        database_url=database,
        feature_url=DOWN,
        reward_url=DOWN,
        judge_url=DOWN,
        retries=0,
        timeout_s=1,
        rescore_interval_s=3600,
    )
    with TestClient(create_app(settings)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {admin}"
        yield test_client


def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


def _nested(depth: int, inner: bytes = b"1") -> bytes:
    return b'{"a":' * depth + inner + b"}" * depth


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/alignment/jobs", b'{"kind":"sft","x":' + _nested(1000) + b"}"),
        ("/v1/alignment/jobs", _nested(100_000)),
        ("/v1/alignment/pairs:preview", b'{"x":' + _nested(1000) + b"}"),
        ("/v1/sessions", _nested(100_000)),
        ("/v1/sessions:batch", b'{"sessions":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("/v1/collector/tokens", b'{"user_id":' + _nested(1000) + b"}"),
    ],
)
def test_deeply_nested_bodies_get_a_4xx(
    client: TestClient[Litestar], caplog: pytest.LogCaptureFixture, path: str, body: bytes
) -> None:
    # Finding 16: a body nested 1,000 deep answered 500 from POST /v1/alignment/jobs (RecursionError).
    caplog.set_level(logging.INFO)
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]
    _no_errors_logged(caplog)


def test_a_huge_event_cursor_ends_the_stream_without_a_traceback(
    client: TestClient[Litestar], database: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Finding 16: `after` beyond SQLite's integers logged an 8.3 KB traceback per request.
    store = Store(database)
    try:
        jobs = store.alignment
        summary = DataSummary(
            source="test",
            model_id=None,
            sessions=0,
            pairs=0,
            train=0,
            test=0,
            prompts_train=0,
            prompts_test=0,
            mean_confidence=None,
            sha256="",
        )
        job = jobs.create("sft", {}, summary, [])
        jobs.request_cancel(job.id)  # a finished job: its stream ends after the log
    finally:
        store.close()
    caplog.set_level(logging.INFO)
    for after in ("9" * 30, "9" * 19, str(2**63), "-5"):
        response = client.get(f"/v1/alignment/jobs/{job.id}/events", params={"after": after})
        assert response.status_code in (200, 400), response.text
        if response.status_code == 400:
            assert response.json()["field"] == "after"
    response = client.get(f"/v1/alignment/jobs/{job.id}/events", params={"after": "9" * 5000})
    assert response.status_code == 400
    assert response.json()["field"] == "after"
    assert len(response.text) < 500  # the request line is not echoed back
    for last in ("9" * 5000, "9" * 30):
        response = client.get(f"/v1/alignment/jobs/{job.id}/events", headers={"Last-Event-ID": last})
        assert response.status_code == 400
        assert response.json()["field"] == "Last-Event-ID"
    _no_errors_logged(caplog)


def test_query_parameters_of_the_wrong_type_are_named(client: TestClient[Litestar]) -> None:
    response = client.get("/v1/sessions", params={"since": "yesterday"})
    assert response.status_code == 400
    assert response.json()["field"] == "since"
    assert "yesterday" not in response.json()["detail"]


def _body(**ids: Any) -> bytes:
    session = simulate_session(seed=4, samples=30, gaze=False, camera=False)
    return msgspec.json.encode(msgspec.structs.replace(session, **ids))


@pytest.mark.parametrize("field", ["session_id", "user_id", "task_id", "query_id"])
@pytest.mark.parametrize("value", ["..", ".", "a/b", "../../etc", "a b", "a?b"])
def test_ids_outside_the_safe_alphabet_are_refused_at_ingest(
    client: TestClient[Litestar], field: str, value: str
) -> None:
    # Finding 7: such ids were stored but never erasable (DELETE /v1/users/.. answered 404).
    response = client.post("/v1/sessions", content=_body(**{field: value}))
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert "letters, digits" in response.json()["detail"]
    batch = b'{"sessions":[' + _body(session_id="fine-1") + b"," + _body(**{field: value}) + b"]}"
    response = client.post("/v1/sessions:batch", content=batch)
    assert response.status_code == 422
    assert response.json()["field"] == f"sessions[1].{field}"
    assert "letters, digits" in response.json()["detail"]


def test_every_id_of_the_alphabet_can_be_read_and_erased(client: TestClient[Litestar]) -> None:
    for user in ("u.1", "a:b@c-d_e", "x.."):
        response = client.post("/v1/sessions", content=_body(session_id=f"{user}.s", user_id=user))
        assert response.status_code == 202, response.text
        assert client.get(f"/v1/sessions/{user}.s").status_code == 200
        erased = client.delete(f"/v1/users/{user}")
        assert erased.status_code == 200, erased.text
        assert erased.json()["rows_deleted"]["sessions"] == 1
        assert client.get(f"/v1/sessions/{user}.s").status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "key"),
    [
        ("/v1/collector/tokens", b'{"user_id":"reader-1","user_id":"admin"}', "user_id"),
        ("/v1/alignment/pairs:preview", b'{"min_confidence":0.6,"min_confidence":0.9}', "min_confidence"),
    ],
)
def test_duplicate_keys_are_refused_naming_the_key(
    client: TestClient[Litestar], path: str, body: bytes, key: str
) -> None:
    # Finding 20: duplicate keys were accepted (the last one won; another parser may take the first).
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == key
    assert "duplicate key" in response.json()["detail"]


def test_an_import_stores_no_id_outside_the_alphabet(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Imported sessions are built, not decoded: the alphabet is checked by the import itself.
    import tacit.ifllm.reader
    import tacit.ifllm.sessions
    from gateway.imports import KIND, run_ifllm_import

    good = simulate_session(seed=1, samples=20, session_id="ifllm-1", user_id="worker_1")
    bad = simulate_session(seed=2, samples=20, session_id="ifllm-2", user_id="../worker_2")

    class Dataset:
        def __init__(self, root: str) -> None:
            self.root = root

        def task_dirs(self) -> list[tuple[Any, Any]]:
            return [(("worker_1", "1"), "folder")]

    monkeypatch.setattr(tacit.ifllm.reader, "Dataset", Dataset)
    monkeypatch.setattr(tacit.ifllm.sessions, "task_sessions", lambda dataset, key, folder: [good, bad])
    store = Store(database)
    try:
        store.migrate()
        job = store.jobs.create_job(KIND, {"data": "x"})
        assert run_ifllm_import(store, job.id) == "succeeded"
        row = store.jobs.get_job(job.id)
        assert row is not None
        assert (row.status, row.result) == (
            "succeeded",
            {"stored": 1, "already_stored": 0, "conflicts": 0, "invalid_ids": 1},
        )
        assert store.sessions.get_session("ifllm-1") is not None
        assert store.sessions.get_session("ifllm-2") is None
    finally:
        store.close()


def test_ids_stored_before_the_alphabet_can_still_be_erased(client: TestClient[Litestar], database: str) -> None:
    # Finding 7: a user id with '/' was stored but DELETE /v1/users/{id} answered 404 (it is no path segment).
    store = Store(database)
    try:
        for user in ("a/b", "../c", "."):  # written by an older gateway, straight into the database
            store.sessions.put_session(
                simulate_session(seed=7, samples=20, user_id=user, session_id=f"legacy-{len(user)}")
            )
    finally:
        store.close()
    assert client.delete("/v1/users/a%2Fb").status_code == 404
    for user in ("a/b", "../c", "."):
        erased = client.delete("/v1/users", params={"user_id": user})
        assert erased.status_code == 200, erased.text
        assert (erased.json()["user_id"], erased.json()["rows_deleted"]["sessions"]) == (user, 1)
    assert client.delete("/v1/users").status_code == 400  # the query parameter is required
