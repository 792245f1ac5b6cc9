"""Judge readiness: no endpoint configured, an endpoint that is not there, and changing it without a restart."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest
from litestar.testing import TestClient

from judge_svc.app import create_app
from judge_svc.settings import JudgeSettings, load_judge_settings, redact_url
from judge_svc.testing import FakeOpenAIServer
from tacit.settings import SettingsError

BODY = {"prompt": "Q", "answer_a": "a", "answer_b": "b", "both_orders": False, "use_cache": False}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_without_an_endpoint_judging_is_a_503_naming_the_setting_and_readyz_says_so() -> None:
    with TestClient(create_app(JudgeSettings(redis_url=""))) as client:
        start = time.perf_counter()
        response = client.post("/v1/judgments", json=BODY)
        assert time.perf_counter() - start < 1.0
        assert response.status_code == 503, response.text
        problem = response.json()
        assert problem["code"] == "not_configured"
        assert "TACIT_JUDGE_BASE_URL" in problem["detail"]
        batch = client.post("/v1/judgments:batch", json={"items": [BODY]})
        assert (batch.status_code, batch.json()["code"]) == (503, "not_configured")
        # a bad body is still a 422 first: the service validates before it says it cannot judge
        assert client.post("/v1/judgments", json={}).status_code == 422

        ready = client.get("/readyz")
        assert ready.status_code == 200  # the service runs; it has nothing to ask
        body = ready.json()
        assert (body["ready"], body["status"]) == (True, "not_configured")
        assert body["llm"]["configured"] is False
        assert body["llm"]["endpoint"] is None


def test_an_unreachable_endpoint_fails_fast_naming_it_without_the_key() -> None:
    port = closed_port()
    settings = JudgeSettings(
        base_url=f"http://user:pw@127.0.0.1:{port}/v1", api_key="sk-secret", retries=3, backoff_s=1.0, redis_url=""
    )
    with TestClient(create_app(settings)) as client:
        start = time.perf_counter()
        response = client.post("/v1/judgments", json=BODY)
        elapsed = time.perf_counter() - start
        assert response.status_code == 200
        verdict = response.json()
        assert verdict["winner"] is None
        endpoint = f"http://127.0.0.1:{port}/v1/chat/completions"
        assert endpoint in verdict["error"]
        assert "ConnectError" in verdict["error"]
        assert "sk-secret" not in response.text
        assert "pw@" not in response.text
        assert elapsed < 1.0, f"a refused connection was retried ({elapsed:.1f} s)"

        ready = client.get("/readyz")
        assert ready.status_code == 503
        llm = ready.json()["llm"]
        assert (llm["status"], llm["configured"], llm["endpoint"]) == ("unreachable", True, endpoint)
        assert endpoint in llm["detail"]
        assert 'tacit_judge_failures_total{reason="unreachable"} 1.0' in client.get("/metrics").text


def test_reload_swaps_the_endpoint_from_the_settings_file(tmp_path: Path, fake: FakeOpenAIServer) -> None:
    file = tmp_path / "judge.env"
    file.write_text("# the judge\nTACIT_JUDGE_REDIS_URL=\n")
    env = {"TACIT_JUDGE_SETTINGS_FILE": str(file), "TACIT_JUDGE_RETRIES": "0"}

    def reload() -> JudgeSettings:
        return load_judge_settings(env)

    with TestClient(create_app(reload(), reload=reload)) as client:
        assert client.post("/v1/judgments", json=BODY).status_code == 503
        file.write_text(
            f"TACIT_JUDGE_REDIS_URL=\nexport TACIT_JUDGE_BASE_URL='{fake.base_url}'\nTACIT_JUDGE_MODEL=judge-model\n"
            "TACIT_JUDGE_PORT=9999\n"
        )
        answer = client.post("/admin/reload")
        assert answer.status_code == 200, answer.text
        reloaded = answer.json()
        assert reloaded["llm"]["status"] == "ok"
        assert reloaded["needs_restart"] == ["port"]
        body = {**BODY, "prompt": f"Q {uuid.uuid4()}"}
        verdict = client.post("/v1/judgments", json=body).json()
        assert (verdict["winner"], verdict["model"]) == ("A", "judge-model")
        assert client.get("/readyz").json()["status"] == "ok"

        file.write_text("TACIT_JUDGE_CONCURRENCY=0\n")
        refused = client.post("/admin/reload")
        assert (refused.status_code, refused.json()["field"]) == (422, "settings")
        assert client.get("/readyz").json()["llm"]["model"] == "judge-model"  # the previous settings stay


def test_settings_file_lines_and_redaction(tmp_path: Path) -> None:
    assert redact_url("https://u:p@api.example.com:8443/v1?key=k#f") == "https://api.example.com:8443/v1"
    file = tmp_path / "judge.env"
    file.write_text("not a setting\n")
    with pytest.raises(SettingsError, match=r"judge\.env:1"):
        load_judge_settings({"TACIT_JUDGE_SETTINGS_FILE": str(file)})
    with pytest.raises(SettingsError, match="TACIT_JUDGE_SETTINGS_FILE"):
        load_judge_settings({"TACIT_JUDGE_SETTINGS_FILE": str(tmp_path / "missing.env")})
    with pytest.raises(SettingsError, match="http"):
        JudgeSettings(base_url="ftp://h/v1")
    assert JudgeSettings().configured is False
    assert JudgeSettings(base_url="http://h:1").endpoint == "http://h:1/v1/chat/completions"
