"""sessions:batch limits: bytes (413 naming the limit) and count (422), decoding off the event loop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.keys import create_key
from gateway.sessions import MAX_BATCH_BYTES
from gateway.settings import GatewaySettings
from tacit.db import Store
from tacit.simulate import simulate_session

DOWN = "http://127.0.0.1:9"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient[Litestar]]:
    database = f"sqlite:///{tmp_path / 'gateway.db'}"
    store = Store(database)
    store.migrate()
    key = create_key(store, ["ingest"])[0]
    store.close()
    settings = GatewaySettings(
        database_url=database, feature_url=DOWN, reward_url=DOWN, judge_url=DOWN, retries=0, timeout_s=1
    )
    with TestClient(create_app(settings)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {key}"
        yield test_client


def _batch(n: int, samples: int = 50) -> bytes:
    sessions = [simulate_session(seed=i, samples=samples, session_id=f"b-{i}") for i in range(n)]
    return msgspec.json.encode({"sessions": sessions})


def test_a_batch_over_the_byte_limit_is_refused_naming_it(client: TestClient[Litestar]) -> None:
    body = _batch(1)
    padded = body[:-1] + b"," + b'"pad":"' + b"x" * MAX_BATCH_BYTES + b'"}'
    answer = client.post("/v1/sessions:batch", content=padded, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert str(MAX_BATCH_BYTES) in answer.json()["detail"]


def test_a_batch_over_the_count_limit_is_refused(client: TestClient[Litestar]) -> None:
    answer = client.post(
        "/v1/sessions:batch", content=_batch(501, samples=0), headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.json()["field"].startswith("$.sessions") or answer.json()["field"] == "sessions"


@pytest.mark.parametrize("run", [1, 2])  # a second app (a second event loop) shares the module's decode limiter
def test_a_batch_is_decoded_validated_and_stored_whole(client: TestClient[Litestar], run: int) -> None:
    answer = client.post("/v1/sessions:batch", content=_batch(3), headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert [r["status"] for r in answer.json()["results"]] == ["pending"] * 3  # the services are down: stored
    bad = msgspec.json.decode(_batch(2))
    bad["sessions"][1]["responses"] = []
    refused = client.post("/v1/sessions:batch", json=bad)
    assert refused.status_code == 422
    assert refused.json()["field"].startswith("sessions[1].")
