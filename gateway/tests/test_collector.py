"""Browser tokens and the collector's routes: scope, binding to one user and session prefix, expiry, assets."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.collector import BROWSER_PREFIX, Collector, CollectorSettings, TokenError, mint_token, verify_token
from gateway.keys import create_key
from gateway.settings import GatewaySettings
from judge_svc.testing import FakeOpenAIServer, Reply
from tacit.db import Store
from tacit.settings import SettingsError
from tacit.simulate import simulate_session

SECRET = "s" * 40


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _session(token: dict[str, str], name: str = "q1", **kw: object) -> bytes:
    session = simulate_session(
        seed=3,
        samples=60,
        gaze=False,
        camera=False,
        user_id=str(kw.pop("user_id", token["user_id"])),
        session_id=str(kw.pop("session_id", token["session_prefix"] + name)),
        **kw,  # type: ignore[arg-type]
    )
    return msgspec.json.encode(session)


@pytest.fixture(autouse=True)
def demo_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo is off by default; these tests exercise it."""
    monkeypatch.setenv("TACIT_COLLECTOR_DEMO", "true")


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def client(database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A gateway whose feature and reward services are down: sessions are stored and answered `pending`."""
    monkeypatch.setenv("TACIT_COLLECTOR_SECRET", SECRET)
    settings = GatewaySettings(
        database_url=database,
        feature_url="http://127.0.0.1:9",
        reward_url="http://127.0.0.1:9",
        retries=0,
        timeout_s=1,
        rescore_interval_s=3600,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _keys(database: str) -> dict[str, str]:
    store = Store(database)
    try:
        return {scope: create_key(store, [scope], scope)[0] for scope in ("ingest", "read", "admin")}
    finally:
        store.close()


# --- tokens -------------------------------------------------------------------------------------------------


def test_token_round_trip_and_expiry() -> None:
    token, claims = mint_token(SECRET.encode(), user_id="u1", session_prefix="u1.ab.", ttl_s=600, now=1000.0)
    assert token.startswith(BROWSER_PREFIX)
    assert (claims.sub, claims.sid, claims.scope, claims.exp) == ("u1", "u1.ab.", "ingest", 1600)
    assert verify_token(SECRET.encode(), token, now=1599.9) == claims
    with pytest.raises(TokenError, match="expired"):
        verify_token(SECRET.encode(), token, now=1600.0)


def test_forged_tokens_are_refused() -> None:
    token, _ = mint_token(SECRET.encode(), user_id="u1", session_prefix="u1.ab.", ttl_s=600, now=1000.0)
    body, signature = token.split(".")
    with pytest.raises(TokenError, match="signature"):
        verify_token(b"another secret of enough length......", token, now=1000.0)
    # Claims rewritten (another user, a later expiry, admin scope) keep the old signature: refused.
    claims = json.loads(base64.urlsafe_b64decode(body[len(BROWSER_PREFIX) :] + "=="))
    for change in ({"sub": "victim"}, {"exp": 10**10}, {"scope": "admin"}):
        forged = BROWSER_PREFIX + base64.urlsafe_b64encode(json.dumps({**claims, **change}).encode()).decode()
        with pytest.raises(TokenError, match="signature"):
            verify_token(SECRET.encode(), f"{forged.rstrip('=')}.{signature}", now=1000.0)
    for junk in ("tacit_abc", f"{token}.x", BROWSER_PREFIX, ""):
        with pytest.raises(TokenError):
            verify_token(SECRET.encode(), junk, now=1000.0)


def test_settings_invariants() -> None:
    with pytest.raises(SettingsError, match="32"):
        CollectorSettings(secret="short")
    with pytest.raises(SettingsError, match="ttl"):
        CollectorSettings(token_ttl_s=7200, max_token_ttl_s=3600)
    with pytest.raises(SettingsError, match="llm_models"):
        CollectorSettings(llm_base_url="http://127.0.0.1:1/v1")
    collector = Collector(CollectorSettings(token_ttl_s=60), clock=lambda: 5000.0)
    minted = collector.mint("alice")
    assert minted.expires_at == 5060
    assert minted.scopes == ["ingest"]
    assert minted.session_prefix.startswith("alice.")
    assert collector.mint("alice").session_prefix != minted.session_prefix  # one prefix per token


# --- routes -------------------------------------------------------------------------------------------------


def test_browser_token_ingests_and_reads_back_only_its_own_sessions(client: TestClient) -> None:
    token = client.post("/demo/token").json()
    other = client.post("/demo/token").json()
    assert token["user_id"].startswith("demo-")

    posted = client.post("/v1/collector/sessions", content=_session(token), headers=_bearer(token["token"]))
    assert posted.status_code == 202, posted.text  # stored; scoring waits for the services
    session_id = token["session_prefix"] + "q1"
    assert posted.json()["session_id"] == session_id

    read = client.get(f"/v1/collector/sessions/{session_id}", headers=_bearer(token["token"]))
    assert read.status_code == 200, read.text
    assert read.json()["record"]["session"]["session_id"] == session_id
    assert read.json()["record"]["score"]["status"] == "pending"
    assert read.headers["cache-control"] == "no-store"

    # Another token (another demo user) can neither read nor write these sessions.
    assert client.get(f"/v1/collector/sessions/{session_id}", headers=_bearer(other["token"])).status_code == 403
    foreign = _session(token, name="q2")
    refused = client.post("/v1/collector/sessions", content=foreign, headers=_bearer(other["token"]))
    assert refused.status_code == 403
    assert refused.json()["field"] == "session_id"
    # Its own prefix but someone else's user id: refused too.
    spoofed = _session(other, user_id="someone-else")
    refused = client.post("/v1/collector/sessions", content=spoofed, headers=_bearer(other["token"]))
    assert refused.status_code == 403
    assert refused.json()["field"] == "user_id"


def test_a_browser_token_is_not_an_api_key(client: TestClient) -> None:
    token = client.post("/demo/token").json()["token"]
    for method, path in (
        ("POST", "/v1/sessions"),
        ("GET", "/v1/sessions"),
        ("DELETE", "/v1/users/u1"),
        ("POST", "/v1/collector/tokens"),
        ("GET", "/v1/reward/models"),
    ):
        response = client.request(method, path, headers=_bearer(token), content=b"{}")
        assert response.status_code == 401, (path, response.text)


def test_expired_and_forged_tokens_are_refused_by_the_routes(client: TestClient) -> None:
    expired, _ = mint_token(SECRET.encode(), user_id="u1", session_prefix="u1.x.", ttl_s=60, now=time.time() - 120)
    body = _session({"user_id": "u1", "session_prefix": "u1.x."})
    response = client.post("/v1/collector/sessions", content=body, headers=_bearer(expired))
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]
    forged, _ = mint_token(b"x" * 40, user_id="u1", session_prefix="u1.x.", ttl_s=60, now=time.time())
    assert client.post("/v1/collector/sessions", content=body, headers=_bearer(forged)).status_code == 401
    assert client.post("/v1/collector/sessions", content=body).status_code == 401


def test_api_keys_mint_tokens_and_read_sessions(client: TestClient, database: str) -> None:
    keys = _keys(database)
    minted = client.post(
        "/v1/collector/tokens", json={"user_id": "host-user-7", "ttl_s": 120}, headers=_bearer(keys["ingest"])
    )
    assert minted.status_code == 201, minted.text
    token = minted.json()
    assert token["user_id"] == "host-user-7"
    assert token["scopes"] == ["ingest"]
    assert 110 <= token["expires_at"] - time.time() <= 121
    assert client.post("/v1/collector/tokens", json={}, headers=_bearer(keys["read"])).status_code == 403
    assert client.post("/v1/collector/tokens", json={}).status_code == 401
    too_long = client.post("/v1/collector/tokens", json={"ttl_s": 10**6}, headers=_bearer(keys["ingest"]))
    assert too_long.status_code == 422
    assert too_long.json()["field"] == "ttl_s"
    bad_user = client.post("/v1/collector/tokens", json={"user_id": "a b"}, headers=_bearer(keys["ingest"]))
    assert bad_user.status_code == 422

    assert client.post("/v1/collector/sessions", content=_session(token), headers=_bearer(token["token"])).is_success
    session_id = token["session_prefix"] + "q1"
    # An operator reads any session with a read key; an ingest-only key may not read.
    assert client.get(f"/v1/collector/sessions/{session_id}", headers=_bearer(keys["read"])).status_code == 200
    assert client.get(f"/v1/collector/sessions/{session_id}", headers=_bearer(keys["ingest"])).status_code == 403
    assert client.get("/v1/collector/sessions/nope", headers=_bearer(keys["read"])).status_code == 404


def test_invalid_sessions_are_refused_with_the_field(client: TestClient) -> None:
    token = client.post("/demo/token").json()
    session = msgspec.json.decode(_session(token))
    session["responses"][0]["mouse"]["char_index"][0] = 10**6
    response = client.post("/v1/collector/sessions", json=session, headers=_bearer(token["token"]))
    assert response.status_code == 422
    assert response.json()["field"] == "responses[0].mouse.char_index[0]"


def test_assets_and_pages(client: TestClient) -> None:
    sdk = client.get("/sdk/tacit.js")
    assert sdk.status_code == 200
    assert sdk.headers["content-type"].startswith("text/javascript")
    assert "caretPositionFromPoint" in sdk.text
    for page in ("/demo", "/sessions/some-id/replay"):
        response = client.get(page)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in response.headers["content-security-policy"]
    assert client.get("/collector/static/demo.js").status_code == 200
    for name in ("..%2Fapp.py", "demo.html", "nope.js"):
        assert client.get(f"/collector/static/{name}").status_code == 404
    samples = client.get("/demo/samples").json()
    assert samples["llm"] is False
    assert all(len(s["answers"]) == 2 for s in samples["samples"])


def test_demo_tokens_are_rate_limited(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TACIT_COLLECTOR_DEMO_TOKENS_PER_MINUTE", "2")
    with TestClient(create_app(GatewaySettings(database_url=database, rescore_interval_s=3600))) as client:
        assert [client.post("/demo/token").status_code for _ in range(3)] == [201, 201, 429]
        assert int(client.post("/demo/token").headers["retry-after"]) > 0


@pytest.mark.parametrize("setting", [None, "false", "0"])
def test_the_demo_is_off_unless_switched_on(
    database: str, monkeypatch: pytest.MonkeyPatch, setting: str | None
) -> None:
    # Finding 2: /demo/token minted ingest tokens for anyone by default.
    if setting is None:
        monkeypatch.delenv("TACIT_COLLECTOR_DEMO")
    else:
        monkeypatch.setenv("TACIT_COLLECTOR_DEMO", setting)
    with TestClient(create_app(GatewaySettings(database_url=database, rescore_interval_s=3600))) as client:
        assert client.get("/demo").status_code == 404
        assert client.post("/demo/token").status_code == 404
        assert "TACIT_COLLECTOR_DEMO=true" in client.post("/demo/token").json()["detail"]
        assert client.post("/demo/answers", json={"question": "Why?"}).status_code in (401, 404)
        assert client.get("/sdk/tacit.js").status_code == 200  # the SDK serves host pages whatever the demo


def test_demo_sessions_are_marked_and_kept_out_of_training_pairs(client: TestClient, database: str) -> None:
    # Finding 2: 302 of 304 alignment pairs came from an anonymous demo user.
    demo = client.post("/demo/token").json()
    keys = _keys(database)
    host = client.post("/v1/collector/tokens", json={"user_id": "reader-1"}, headers=_bearer(keys["ingest"])).json()
    assert (
        client.post("/v1/collector/sessions", content=_session(demo), headers=_bearer(demo["token"])).status_code == 202
    )
    assert (
        client.post("/v1/collector/sessions", content=_session(host), headers=_bearer(host["token"])).status_code == 202
    )
    listed = client.get("/v1/sessions", headers=_bearer(keys["read"])).json()["items"]
    assert {item["user_id"]: item["demo"] for item in listed} == {demo["user_id"]: True, "reader-1": False}
    store = Store(database)
    try:
        rows, _ = store.sessions.list_sessions()  # what training pairs are built from
        assert [row.user_id for row in rows] == ["reader-1"]
        assert len(store.sessions.list_sessions(include_demo_sessions=True)[0]) == 2
    finally:
        store.close()


def test_browser_ingest_is_rate_limited_per_user_and_demo_address(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Finding 2: demo-token ingest had no limit (96 sessions/s).
    monkeypatch.setenv("TACIT_COLLECTOR_SECRET", SECRET)
    monkeypatch.setenv("TACIT_COLLECTOR_SESSIONS_PER_MINUTE", "3")
    monkeypatch.setenv("TACIT_COLLECTOR_DEMO_SESSIONS_PER_MINUTE", "5")
    settings = GatewaySettings(
        database_url=database,
        feature_url="http://127.0.0.1:9",
        reward_url="http://127.0.0.1:9",
        retries=0,
        timeout_s=1,
        rescore_interval_s=3600,
    )
    with TestClient(create_app(settings)) as client:
        first = client.post("/demo/token").json()
        statuses = [
            client.post(
                "/v1/collector/sessions", content=_session(first, f"q{i}"), headers=_bearer(first["token"])
            ).status_code
            for i in range(4)
        ]
        assert statuses == [202, 202, 202, 429]
        # More tokens from the same address: the address's budget of demo sessions is spent after 5.
        second, third = client.post("/demo/token").json(), client.post("/demo/token").json()
        statuses = [
            client.post("/v1/collector/sessions", content=_session(t, f"q{i}"), headers=_bearer(t["token"])).status_code
            for t in (second, third)
            for i in range(2)
        ]
        assert statuses == [202, 202, 429, 429]
        refused = client.post("/v1/collector/sessions", content=_session(third, "q9"), headers=_bearer(third["token"]))
        assert int(refused.headers["retry-after"]) > 0
        assert refused.json()["code"] == "rate_limited"


def test_demo_answers_are_rate_and_size_limited(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Finding 5: /demo/answers relayed anyone's prompts to the LLM with no limit (50 calls -> 100 upstream).
    with FakeOpenAIServer() as llm:
        for _ in range(10):
            llm.push(Reply.ok("An answer."))
        monkeypatch.setenv("TACIT_COLLECTOR_LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("TACIT_COLLECTOR_LLM_MODELS", '["model-a"]')
        monkeypatch.setenv("TACIT_COLLECTOR_DEMO_ANSWERS_PER_MINUTE", "2")
        with TestClient(create_app(GatewaySettings(database_url=database, rescore_interval_s=3600))) as client:
            tokens = [client.post("/demo/token").json()["token"] for _ in range(3)]
            huge = client.post("/demo/answers", json={"question": "x" * 20_000}, headers=_bearer(tokens[0]))
            assert huge.status_code == 413
            statuses = [
                client.post("/demo/answers", json={"question": "Why?"}, headers=_bearer(token)).status_code
                for token in tokens
                for _ in range(2)
            ]
            assert statuses == [200, 200, 429, 429, 429, 429]
            assert len(llm.requests) == 4  # two questions, two answers each


def test_demo_answers_from_an_openai_compatible_endpoint(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer() as llm:
        llm.push(Reply.ok("  Left answer.\n\n\n\nSecond paragraph.  "), Reply.ok("Right answer."))
        monkeypatch.setenv("TACIT_COLLECTOR_LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("TACIT_COLLECTOR_LLM_MODELS", '["model-a", "model-b"]')
        with TestClient(create_app(GatewaySettings(database_url=database, rescore_interval_s=3600))) as client:
            assert client.get("/demo/samples").json()["llm"] is True
            token = client.post("/demo/token").json()["token"]
            assert client.post("/demo/answers", json={"question": "Why?"}).status_code == 401
            answered = client.post("/demo/answers", json={"question": "Why?"}, headers=_bearer(token))
            assert answered.status_code == 200, answered.text
            assert answered.json()["answers"] == ["Left answer.\n\nSecond paragraph.", "Right answer."]
            assert [r["model"] for r in llm.requests] == ["model-a", "model-b"]
            assert llm.requests[0]["messages"] == [{"role": "user", "content": "Why?"}]
            llm.push(Reply.server_error())
            assert client.post("/demo/answers", json={"question": "Why?"}, headers=_bearer(token)).status_code == 502
