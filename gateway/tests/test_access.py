"""The guard under attack: oversized and random credentials, revocation, failed-authentication throttling.

Each test replays a probe of the hardening review (issue 14) in-process, bounded in count and time; the
memory probe against a real gateway process is `tests/e2e/test_hardening.py`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway import keys
from gateway.app import create_app
from gateway.keys import create_key, revoke
from gateway.settings import GatewaySettings
from tacit.db import Store

DOWN = "http://127.0.0.1:9"


def _settings(database: str, **kw: Any) -> GatewaySettings:
    return GatewaySettings(
        database_url=database,
        feature_url=DOWN,
        reward_url=DOWN,
        judge_url=DOWN,
        retries=0,
        timeout_s=1,
        rescore_interval_s=3600,
        **kw,
    )


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    store = Store(database)
    store.migrate()
    yield store
    store.close()


def _client(database: str, **kw: Any) -> TestClient[Litestar]:
    return TestClient(create_app(_settings(database, **kw)))


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_long_authorization_header_is_refused_naming_it(database: str, store: Store) -> None:
    with _client(database) as client:
        response = client.get("/v1/sessions", headers=_auth("tacit_" + "a" * 2000))
    assert response.status_code == 431
    assert response.json()["field"] == "authorization"


def test_headers_over_the_limit_get_431(database: str, store: Store) -> None:
    with _client(database, max_header_bytes=4096) as client:
        response = client.get("/healthz", headers={"X-Padding": "p" * 5000})
        assert response.status_code == 431
        assert response.json() == {
            "code": "header_too_large",
            "field": "x-padding",
            "detail": response.json()["detail"],
        }
        assert "4096" in response.json()["detail"]
        assert client.get("/healthz", headers={"X-Padding": "p" * 1000}).status_code == 200


def test_only_verified_tokens_are_remembered(database: str, store: Store) -> None:
    keys._verified.clear()
    token, row = create_key(store, ["read"])
    # Random well-formed tokens sharing the key's prefix (each costs a scrypt): none is remembered.
    with _client(database, auth_failure_burst=1000) as client:
        for _ in range(20):
            fake = row.prefix + secrets.token_urlsafe(32)[: len(token) - len(row.prefix)]
            assert client.get("/v1/sessions", headers=_auth(fake)).status_code == 401
        assert len(keys._verified._items) == 0
        assert client.get("/v1/sessions", headers=_auth(token)).status_code == 200
        assert len(keys._verified._items) == 1


def test_a_revoked_key_is_refused_on_the_next_request(database: str, store: Store) -> None:
    # Finding 11: a revoked key kept working for 27 s (a 30 s cache of the key in the guard).
    token, row = create_key(store, ["read"])
    with _client(database) as client:
        for _ in range(5):
            assert client.get("/v1/sessions", headers=_auth(token)).status_code == 200
        revoke(store, row.id)  # another process (`tacit keys revoke`) writing the database
        response = client.get("/v1/sessions", headers=_auth(token))
        assert response.status_code == 401
        assert response.json()["detail"] == "unknown or revoked API key"


def test_failed_authentications_are_throttled_per_prefix_and_address(database: str, store: Store) -> None:
    # Finding 17: anyone knowing a key's prefix could force a scrypt per request, unthrottled.
    keys._verified.clear()
    token, row = create_key(store, ["read"])
    other, _ = create_key(store, ["read"])
    with _client(database, auth_failures_per_s=0.01, auth_failure_burst=10) as client:
        assert client.get("/v1/sessions", headers=_auth(token)).status_code == 200  # verified before the attack
        fake = row.prefix + "A" * (len(token) - len(row.prefix))
        statuses = [client.get("/v1/sessions", headers=_auth(fake)).status_code for _ in range(40)]
        assert statuses[:10] == [401] * 10
        assert set(statuses[10:]) == {429}
        started = time.perf_counter()
        refused = client.get("/v1/sessions", headers=_auth(fake))
        assert time.perf_counter() - started < 0.02  # refused before any scrypt (~50 ms)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["field"] == "authorization"
        # The key's owner, verified before, is not locked out by the attacker's failures.
        assert client.get("/v1/sessions", headers=_auth(token)).status_code == 200
        # Same address, another never-verified key: the address is over its budget too.
        assert client.get("/v1/sessions", headers=_auth(other)).status_code == 429


def test_failed_authentications_are_counted_per_address(database: str, store: Store) -> None:
    first, row_a = create_key(store, ["read"])
    _, row_b = create_key(store, ["read"])
    with _client(database, auth_failures_per_s=0.01, auth_failure_burst=5) as client:

        def fake(prefix: str) -> int:
            token = prefix + secrets.token_urlsafe(32)[: len(first) - len(prefix)]
            return client.get("/v1/sessions", headers=_auth(token)).status_code

        # Three wrong secrets for key A's prefix, then key B's: the address's budget (5) ends before B's prefix's.
        assert [fake(row_a.prefix) for _ in range(3)] + [fake(row_b.prefix) for _ in range(3)] == [401] * 5 + [429]
        # Tokens whose prefix is no key's cost no scrypt: never throttled, always 401.
        assert {fake("tacit_" + secrets.token_urlsafe(6)[:8]) for _ in range(30)} == {401}


def test_json_routes_refuse_other_content_types(database: str, store: Store) -> None:
    # Finding 20: any content type was parsed as JSON.
    token, _ = create_key(store, ["admin"])
    with _client(database) as client:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            response = client.post(
                "/v1/sessions", content=b"{}", headers={**_auth(token), "Content-Type": content_type}
            )
            assert response.status_code == 415, content_type
            assert response.json()["field"] == "content-type"
        for content_type in ("application/json", "application/json; charset=utf-8", "application/problem+json"):
            response = client.post(
                "/v1/sessions", content=b"{}", headers={**_auth(token), "Content-Type": content_type}
            )
            assert response.status_code == 422, (content_type, response.text)


def test_security_headers_on_every_answer(database: str, store: Store) -> None:
    # Finding 19: no nosniff, no no-store.
    token, _ = create_key(store, ["read"])
    with _client(database) as client:
        for path, headers in (
            ("/healthz", {}),
            ("/v1/sessions", _auth(token)),
            ("/v1/sessions", {}),
            ("/no/such/route", {}),
        ):
            response = client.get(path, headers=headers)
            assert response.headers["x-content-type-options"] == "nosniff", path
            assert response.headers["cache-control"] == "no-store", path
            assert response.headers["x-frame-options"] == "DENY", path
            assert "default-src 'none'" in response.headers["content-security-policy"], path
        sdk = client.get("/sdk/tacit.js")
        assert sdk.headers["cache-control"].startswith("public")  # assets keep their own caching
        assert sdk.headers["x-content-type-options"] == "nosniff"


def test_metrics_behind_a_key_when_one_is_set(database: str, store: Store) -> None:
    with _client(database) as client:
        assert client.get("/metrics").status_code == 200  # open by default
    with _client(database, metrics_key="m" * 32) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=_auth("x" * 32)).status_code == 401
        response = client.get("/metrics", headers=_auth("m" * 32))
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
