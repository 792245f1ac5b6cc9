"""The gateway's `/readyz` reports the judge (configured, reachable) without making it a gateway outage, and a
judgment through the gateway with no judge LLM configured is a 503 that says which setting sets one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.keys import create_key
from gateway.testing import UNREACHABLE, judge_only_settings
from judge_svc.app import create_app as judge_app
from judge_svc.settings import JudgeSettings
from tacit.db import Store
from tacit.serving import background_server


@pytest.fixture
def judge_url() -> Iterator[str]:
    """judge_svc with no LLM endpoint, served on loopback."""
    with background_server(judge_app(JudgeSettings(redis_url=""))) as url:
        yield url


def test_readyz_says_the_judge_has_no_endpoint_and_judging_says_which_setting(tmp_path: Path, judge_url: str) -> None:
    settings = judge_only_settings(tmp_path, judge_url)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz").json()
        assert ready["judge"]["status"] == "not_configured"
        assert ready["judge"]["configured"] is False
        assert "TACIT_JUDGE_BASE_URL" in ready["judge"]["detail"]
        assert "judge" not in ready["checks"]  # the judge is reported, not one of the checks that make it unready

        store = Store(settings.database_url)
        try:
            token, _ = create_key(store, ["train"])
        finally:
            store.close()
        body = {"prompt": "Q", "answer_a": "a", "answer_b": "b"}
        response = client.post("/v1/judgments", json=body, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 503, response.text
        assert "no LLM endpoint configured" in response.json()["detail"]
        assert "TACIT_JUDGE_BASE_URL" in response.json()["detail"]


def test_readyz_says_judge_svc_is_down(tmp_path: Path) -> None:
    with TestClient(create_app(judge_only_settings(tmp_path, UNREACHABLE))) as client:
        judge = client.get("/readyz").json()["judge"]
        assert judge["status"] == "down"
        assert UNREACHABLE in judge["detail"]


def test_an_admin_key_reloads_the_judge_through_the_gateway(tmp_path: Path, judge_url: str) -> None:
    settings = judge_only_settings(tmp_path, judge_url)
    with TestClient(create_app(settings)) as client:
        store = Store(settings.database_url)
        try:
            admin, _ = create_key(store, ["admin"])
            reader, _ = create_key(store, ["read"])
        finally:
            store.close()
        assert client.post("/v1/admin/judge/reload", headers={"Authorization": f"Bearer {reader}"}).status_code == 403
        answer = client.post("/v1/admin/judge/reload", headers={"Authorization": f"Bearer {admin}"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["llm"]["status"] == "not_configured"  # the test's judge reads no file: nothing changed


def test_judgment_jobs_are_listed_and_their_plots_reached_through_the_gateway(tmp_path: Path, judge_url: str) -> None:
    settings = judge_only_settings(tmp_path, judge_url)
    with TestClient(create_app(settings)) as client:
        store = Store(settings.database_url)
        try:
            reader, _ = create_key(store, ["read"])
        finally:
            store.close()
        auth = {"Authorization": f"Bearer {reader}"}
        listed = client.get("/v1/judgments/jobs", headers=auth)
        assert listed.status_code == 200, listed.text  # judge_svc's listing, not the job route with id "jobs"
        assert listed.json()["jobs"] == []
        assert client.get("/v1/judgments/jobs?limit=0", headers=auth).json()["field"] == "limit"
        missing = client.get("/v1/judgments/jobs/nope/plot.png", headers=auth)
        assert missing.status_code == 404, missing.text  # judge_svc's answer, passed on as a Problem
        assert missing.headers["content-type"].startswith("application/json")
        assert client.get("/v1/judgments/jobs").status_code == 401
