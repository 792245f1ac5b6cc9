"""Access control: every route x every credential, rate limits per key, body size limits, CORS.

The gateway app runs in-process (its feature, reward and judge services are down: a route that passes its
guard may answer 4xx or 503, never 401/403).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.keys import allowed, create_key, revoke
from gateway.limits import RateLimiter
from gateway.settings import GatewaySettings
from tacit.db import Store
from tacit.settings import SettingsError
from tests.reliability.out import write_fragment

SECRET = "r" * 40
SCOPES = ("ingest", "read", "train", "admin")
KEY_GUARDS = {"require_scope", "_guard", "_api_key"}


def _settings(database: str, **kw: Any) -> GatewaySettings:
    down = "http://127.0.0.1:9"
    return GatewaySettings(
        database_url=database,
        feature_url=down,
        reward_url=down,
        judge_url=down,
        retries=0,
        timeout_s=1,
        rescore_interval_s=3600,
        **kw,
    )


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def keys(database: str) -> dict[str, str]:
    """A key per scope, a second ingest key, and a revoked admin key."""
    store = Store(database)
    store.migrate()
    try:
        made = {scope: create_key(store, [scope], scope)[0] for scope in SCOPES}
        made["ingest2"] = create_key(store, ["ingest"], "ingest2")[0]
        token, row = create_key(store, ["admin"], "revoked")
        revoke(store, row.id)
        made["revoked"] = token
        return made
    finally:
        store.close()


@pytest.fixture
def client(database: str, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient[Litestar]]:
    monkeypatch.setenv("TACIT_COLLECTOR_SECRET", SECRET)
    with TestClient(create_app(_settings(database))) as test_client:
        yield test_client


def _routes(app: Litestar) -> list[tuple[str, str, Any]]:
    """(method, path with parameters filled in, handler) of every route of the app."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path = route.path
        for name in route.path_parameters:
            path = path.replace(f"{{{name}:str}}", "x").replace(f"{{{name}}}", "x")
        for method, (handler, _) in route.route_handler_map.items():
            if method in ("OPTIONS", "HEAD"):
                continue
            found.append((method, path, handler))
    return sorted(found, key=lambda item: (item[1], item[0]))


def _kind(handler: Any) -> str:
    names = {getattr(guard, "__name__", "") for guard in handler.guards or []}
    if "require_browser_token_or_key" in names:
        return "token_or_key"
    if "require_browser_token" in names:
        return "browser"
    if names & KEY_GUARDS:
        return "key"
    assert not names, (handler, names)
    return "public"


def test_every_route_by_every_credential(client: TestClient[Litestar], keys: dict[str, str]) -> None:
    browser = client.post("/v1/collector/tokens", json={}, headers={"Authorization": f"Bearer {keys['ingest']}"})
    assert browser.status_code == 201, browser.text
    credentials: dict[str, str | None] = {
        "none": None,
        "invalid": "tacit_" + "A" * 43,
        "garbage": "not-a-key",
        "revoked": keys["revoked"],
        "browser token": browser.json()["token"],
        **{scope: keys[scope] for scope in SCOPES},
    }
    routes = _routes(client.app)
    tally: Counter[str] = Counter()
    mismatches = []
    requests = 0
    for method, path, handler in routes:
        kind = _kind(handler)
        needed = handler.opt.get("scope", "admin")
        tried = credentials.items() if kind != "public" else [("none", None)]
        for name, token in tried:
            headers = {"content-type": "application/json"}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            target = path
            if name == "browser token" and kind == "token_or_key":  # a browser token reads its own sessions only
                target = path.removesuffix("/x") + "/" + browser.json()["session_prefix"] + "x"
            status = client.request(method, target, headers=headers, content=b"{}" if method != "GET" else None)
            requests += 1
            if kind == "public":
                expected = "allowed"
            elif name in ("none", "invalid", "garbage", "revoked"):
                expected = "401"
            elif name == "browser token":
                expected = "allowed" if kind in ("browser", "token_or_key") else "401"
            elif kind == "browser":
                expected = "401"  # an API key is not a browser token
            else:
                expected = "allowed" if allowed([name], needed) else "403"
            got = status.status_code
            ok = got not in (401, 403) if expected == "allowed" else got == int(expected)
            if ok and got in (401, 403):
                ok = bool(status.json().get("detail")) and status.json().get("field") == "authorization"
            tally[f"{name} -> {expected}"] += 1
            if not ok:
                mismatches.append({"route": f"{method} {path}", "credential": name, "expected": expected, "got": got})
    write_fragment(
        "access",
        {
            "module": __name__,
            "routes": len(routes),
            "requests": requests,
            "by_expectation": dict(sorted(tally.items())),
            "mismatches": mismatches,
        },
    )
    assert len(routes) >= 40
    assert {_kind(h) for _, _, h in routes} == {"public", "key", "browser", "token_or_key"}
    assert not mismatches, mismatches


def test_rate_limiter_buckets() -> None:
    now = [100.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # per key
    now[0] += 0.5
    assert limiter.take("a") == 0.0
    now[0] += 100  # refills up to the burst, no further
    assert [limiter.take("a") for _ in range(4)][-1] > 0
    assert RateLimiter(0, 0).take("a") == 0.0  # off
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(1.0, 0)
    with pytest.raises(SettingsError):
        GatewaySettings(rate_limit_per_s=-1)
    with pytest.raises(SettingsError):
        GatewaySettings(cors_origins=["*"])


def test_requests_over_the_rate_get_429_with_retry_after(database: str, keys: dict[str, str]) -> None:
    settings = _settings(database, rate_limit_per_s=2.0, rate_burst=3)
    with TestClient(create_app(settings)) as client:
        first = {"Authorization": f"Bearer {keys['ingest']}"}
        answers = [client.get("/v1/sessions", headers=first) for _ in range(6)]
        other = client.get("/v1/sessions", headers={"Authorization": f"Bearer {keys['ingest2']}"})
        refused = [a for a in answers if a.status_code == 429]
        time.sleep(float(refused[0].headers["retry-after"]) if refused else 0)
        later = client.get("/v1/sessions", headers=first)
    statuses = [a.status_code for a in answers]
    assert statuses[:3] == [403, 403, 403]  # an ingest key may not read: still counted against its bucket
    assert 429 in statuses[3:], statuses
    problem = refused[0].json()
    assert problem["code"] == "rate_limited"
    assert "2 requests/s per API key" in problem["detail"]
    assert "bursts of 3" in problem["detail"]
    assert refused[0].headers["retry-after"] == "1"
    assert other.status_code == 403  # another key has its own bucket
    assert later.status_code == 403
    write_fragment(
        "access",
        {
            "rate_limit": {
                "rate_per_s": 2.0,
                "burst": 3,
                "allowed": statuses.count(403),
                "refused": len(refused),
                "retry_after": refused[0].headers["retry-after"],
                "detail": problem["detail"],
                "default_rate_per_s": GatewaySettings().rate_limit_per_s,
                "default_burst": GatewaySettings().rate_burst,
            }
        },
    )


def test_bodies_over_the_limit_get_413_naming_it(
    database: str, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TACIT_COLLECTOR_SECRET", SECRET)
    limit = 1024 * 1024
    with TestClient(create_app(_settings(database, max_body_bytes=limit))) as client:
        store = Store(database)
        before = store.sessions.list_sessions()[0]
        store.close()
        big = client.post(
            "/v1/sessions", content=b"{" + b" " * (2 * limit), headers={"Authorization": f"Bearer {keys['ingest']}"}
        )
        token = client.post("/v1/collector/tokens", json={}, headers={"Authorization": f"Bearer {keys['ingest']}"})
        browser = client.post(
            "/v1/collector/sessions",
            content=b"{" + b" " * (9 * 1024 * 1024),
            headers={"Authorization": f"Bearer {token.json()['token']}"},
        )
    assert big.status_code == 413
    assert big.json()["code"] == "too_large"
    assert str(limit) in big.json()["detail"], big.json()
    assert browser.status_code == 413
    assert str(8 * 1024 * 1024) in browser.json()["detail"], browser.json()
    store = Store(database)
    assert store.sessions.list_sessions()[0] == before == []
    store.close()
    write_fragment(
        "access", {"body_limit": {"limit": limit, "status": big.status_code, "detail": big.json()["detail"]}}
    )


def test_cors_only_for_the_configured_origin(database: str, keys: dict[str, str]) -> None:
    origin, other = "https://reader.example", "https://evil.example"

    def preflight(client: TestClient[Litestar], source: str) -> Any:
        return client.options(
            "/v1/collector/sessions",
            headers={
                "Origin": source,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )

    with TestClient(create_app(_settings(database, cors_origins=[origin]))) as client:
        good = preflight(client, origin)
        bad = preflight(client, other)
        simple_other = client.get("/healthz", headers={"Origin": other})
        simple_good = client.get("/healthz", headers={"Origin": origin})
    with TestClient(create_app(_settings(database))) as client:
        default = preflight(client, origin)
    assert good.status_code in (200, 204), good.text
    assert good.headers.get("access-control-allow-origin") == origin
    assert "authorization" in good.headers.get("access-control-allow-headers", "").lower()
    assert "access-control-allow-origin" not in bad.headers
    assert bad.status_code >= 400
    assert "access-control-allow-origin" not in simple_other.headers
    assert simple_good.headers.get("access-control-allow-origin") == origin
    assert "access-control-allow-origin" not in default.headers  # no origin configured: no CORS at all
    write_fragment(
        "access",
        {
            "cors": {
                "allowed_origin": origin,
                "preflight_allowed_status": good.status_code,
                "other_origin_status": bad.status_code,
                "other_origin_allowed": "access-control-allow-origin" in bad.headers,
                "default_allows_any": "access-control-allow-origin" in default.headers,
            }
        },
    )
