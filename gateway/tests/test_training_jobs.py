"""Cancelling and deleting reward-model trainings through the gateway: scope `train`, forwarded to reward_svc (a named
double here), whose answers (409 naming the field, 404) pass on as they are."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.keys import create_key
from gateway.settings import GatewaySettings
from tacit.db import Store


class RewardDouble:
    """reward_svc's registry routes: m-run can be cancelled, m-old deleted, m-active neither."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((request.method, request.url.raw_path.decode()))
        match request.method, request.url.path:
            case "POST", "/v1/reward/models/m-run/cancel":
                return httpx.Response(200, json={"id": "m-run", "status": "cancelled"})
            case "DELETE", "/v1/reward/models/m-old":
                return httpx.Response(200, json={"id": "m-old", "status": "succeeded"})
            case "DELETE", "/v1/reward/models/m-active":
                detail = "reward model m-active is the active pairwise model: activate another one first"
                return httpx.Response(409, json={"code": "conflict", "field": "active", "detail": detail})
        return httpx.Response(404, json={"code": "not_found", "field": "model_id", "detail": "no reward model"})


@pytest.fixture
def keys(tmp_path: Path) -> tuple[str, dict[str, str]]:
    database = f"sqlite:///{tmp_path / 'gateway.db'}"
    store = Store(database)
    store.migrate()
    try:
        return database, {scope: create_key(store, [scope])[0] for scope in ("train", "read")}
    finally:
        store.close()


@pytest.fixture
def client(keys: tuple[str, dict[str, str]]) -> Iterator[tuple[TestClient[Litestar], RewardDouble, dict[str, str]]]:
    database, secrets = keys
    reward = RewardDouble()
    settings = GatewaySettings(database_url=database, retries=0, timeout_s=1, rescore_interval_s=3600)
    app = create_app(settings, reward_transport=httpx.MockTransport(reward))
    with TestClient(app) as test_client:
        yield test_client, reward, secrets


def test_cancel_and_delete_are_forwarded_with_scope_train(
    client: tuple[TestClient[Litestar], RewardDouble, dict[str, str]],
) -> None:
    http, reward, secrets = client
    train = {"Authorization": f"Bearer {secrets['train']}"}
    cancelled = http.post("/v1/reward/models/m-run/cancel", headers=train)
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    deleted = http.delete("/v1/reward/models/m-old", headers=train)
    assert (deleted.status_code, deleted.json()["id"]) == (200, "m-old")
    refused = http.delete("/v1/reward/models/m-active", headers=train)
    assert (refused.status_code, refused.json()["field"]) == (409, "active")
    missing = http.post("/v1/reward/models/nope/cancel", headers=train)
    assert (missing.status_code, missing.json()["field"]) == (404, "model_id")
    odd = http.delete("/v1/reward/models/a:b@c", headers=train)  # one percent-encoded path segment
    assert odd.status_code == 404
    assert reward.calls == [
        ("POST", "/v1/reward/models/m-run/cancel"),
        ("DELETE", "/v1/reward/models/m-old"),
        ("DELETE", "/v1/reward/models/m-active"),
        ("POST", "/v1/reward/models/nope/cancel"),
        ("DELETE", "/v1/reward/models/a%3Ab%40c"),
    ]


def test_a_read_key_may_neither_cancel_nor_delete(
    client: tuple[TestClient[Litestar], RewardDouble, dict[str, str]],
) -> None:
    http, reward, secrets = client
    read = {"Authorization": f"Bearer {secrets['read']}"}
    assert http.post("/v1/reward/models/m-run/cancel", headers=read).status_code == 403
    assert http.delete("/v1/reward/models/m-old", headers=read).status_code == 403
    assert http.delete("/v1/reward/models/m-old").status_code == 401
    assert reward.calls == []


def test_reward_svc_down_is_503(keys: tuple[str, dict[str, str]]) -> None:
    database, secrets = keys

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    settings = GatewaySettings(database_url=database, retries=0, timeout_s=1, rescore_interval_s=3600)
    with TestClient(create_app(settings, reward_transport=httpx.MockTransport(down))) as http:
        answer = http.post("/v1/reward/models/m-run/cancel", headers={"Authorization": f"Bearer {secrets['train']}"})
        assert answer.status_code == 503
        assert "Retry-After" in answer.headers
