"""The service end to end: litestar app -> OpenAI-compatible backend -> loopback fake server, Redis cache."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from judge_svc.app import create_app
from judge_svc.prompts import TEMPLATE_HASH
from judge_svc.settings import JudgeSettings
from judge_svc.testing import FakeOpenAIServer, Reply, judgment_text
from tacit.schemas.judge import Sampling, Verdict
from tacit.settings import SettingsError, load_settings


@pytest.fixture
def client(fake: FakeOpenAIServer, redis_url: str) -> Iterator[TestClient[Litestar]]:
    settings = JudgeSettings(
        base_url=fake.base_url, model="judge-model", retries=1, backoff_s=0.01, redis_url=redis_url
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_judgment_returns_a_versioned_verdict_and_caches(client: TestClient[Litestar], fake: FakeOpenAIServer) -> None:
    body = {"prompt": f"Q {uuid.uuid4()}", "answer_a": "a", "answer_b": "b"}
    response = client.post("/v1/judgments", json=body)
    assert response.status_code == 200, response.text
    verdict = msgspec.json.decode(response.content, type=Verdict)
    assert (verdict.backend, verdict.model, verdict.template_hash) == ("openai_compat", "judge-model", TEMPLATE_HASH)
    assert verdict.sampling.max_tokens == 512
    assert verdict.winner == "tie"  # the default fake always prefers the first shown answer
    assert verdict.consistent is False
    assert len(fake.requests) == 2

    again = msgspec.json.decode(client.post("/v1/judgments", json=body).content, type=Verdict)
    assert again.cached is True
    assert len(fake.requests) == 2

    metrics = client.get("/metrics").text
    assert 'tacit_judge_calls_total{outcome="ok"} 2.0' in metrics
    assert "tacit_judge_cache_hits_total 2.0" in metrics
    assert 'tacit_judge_tokens_total{direction="in"} 200.0' in metrics
    assert "tacit_judge_inconsistent_total 2.0" in metrics
    assert "tacit_judge_seconds_count 2.0" in metrics


def test_judge_failure_is_a_verdict_with_the_error(client: TestClient[Litestar], fake: FakeOpenAIServer) -> None:
    fake.push(*[Reply.malformed()] * 2)
    body = {"prompt": f"Q {uuid.uuid4()}", "answer_a": "a", "answer_b": "b", "both_orders": False}
    response = client.post("/v1/judgments", json=body)
    assert response.status_code == 200
    verdict = msgspec.json.decode(response.content, type=Verdict)
    assert verdict.winner is None
    assert verdict.error is not None
    assert "unparsable" in verdict.error
    assert 'tacit_judge_failures_total{reason="unparsable"} 1.0' in client.get("/metrics").text


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"{not json", 400, "malformed", "$"),
        (b'{"prompt": "", "answer_a": "a", "answer_b": "b"}', 422, "invalid", "prompt"),
        (b'{"prompt": "q", "answer_a": "a"}', 422, "invalid", "answer_b"),
        (b'{"prompt": "q", "answer_a": "a", "answer_b": "b", "winner_rule": "vibes"}', 422, "invalid", "winner_rule"),
        (b'{"prompt": "q", "answer_a": "a", "answer_b": "b", "extra": 1}', 422, "invalid", "extra"),
    ],
)
def test_bad_requests_are_problems(
    client: TestClient[Litestar], body: bytes, status: int, code: str, field: str
) -> None:
    response = client.post("/v1/judgments", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    problem = response.json()
    assert (problem["code"], problem["field"]) == (code, field)


def test_healthz_and_unknown_route(client: TestClient[Litestar]) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "backend": "openai_compat", "model": "judge-model"}
    assert client.get("/nope").json()["code"] == "not_found"


def test_settings_from_environment() -> None:
    env = {"TACIT_JUDGE_BASE_URL": "http://h:1/v1", "TACIT_JUDGE_CONCURRENCY": "8", "TACIT_JUDGE_REDIS_URL": ""}
    settings = load_settings(JudgeSettings, "TACIT_JUDGE_", env)
    assert (settings.base_url, settings.concurrency, settings.redis_url, settings.port) == (
        "http://h:1/v1",
        8,
        "",
        8103,
    )
    with pytest.raises(SettingsError):
        load_settings(JudgeSettings, "TACIT_JUDGE_", {"TACIT_JUDGE_CONCURRENCY": "0"})


def test_verdicts_carry_the_sampling_sent_and_the_template_hash(fake: FakeOpenAIServer, redis_url: str) -> None:
    """The version fields are what the judge was really called with, and a sampling change is a cache miss."""
    body = {"prompt": f"Q {uuid.uuid4()}", "answer_a": "a", "answer_b": "b"}
    hot = JudgeSettings(
        base_url=fake.base_url, model="judge-model", temperature=0.7, max_tokens=300, redis_url=redis_url
    )
    with TestClient(create_app(hot)) as client:
        verdict = msgspec.json.decode(client.post("/v1/judgments", json=body).content, type=Verdict)
        batch = client.post("/v1/judgments:batch", json={"items": [body]}).json()
        deadline = time.monotonic() + 10
        while (job := client.get(batch["status_url"]).json())["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.02)
    assert verdict.sampling == Sampling(temperature=0.7, top_p=1.0, max_tokens=300)
    assert verdict.template_hash == TEMPLATE_HASH
    sent = [(r["temperature"], r["top_p"], r["max_tokens"]) for r in fake.requests]
    assert sent == [(0.7, 1.0, 300)] * 2
    batch_verdict = msgspec.convert(job["verdicts"][0], type=Verdict)
    assert (batch_verdict.sampling, batch_verdict.template_hash, batch_verdict.cached) == (
        verdict.sampling,
        TEMPLATE_HASH,
        True,
    )

    cold = msgspec.structs.replace(hot, temperature=0.0)
    with TestClient(create_app(cold)) as client:
        again = msgspec.json.decode(client.post("/v1/judgments", json=body).content, type=Verdict)
    assert again.sampling.temperature == 0.0
    assert again.cached is False  # cached outcomes are keyed by the sampling too
    assert len(fake.requests) == 4


def test_malformed_reply_is_retried_and_the_attempts_recorded(
    client: TestClient[Litestar], fake: FakeOpenAIServer
) -> None:
    fake.push(Reply.malformed(), Reply.ok(judgment_text(3, 7)))
    body = {"prompt": f"Q {uuid.uuid4()}", "answer_a": "a", "answer_b": "b", "both_orders": False}
    verdict = msgspec.json.decode(client.post("/v1/judgments", json=body).content, type=Verdict)
    assert (verdict.winner, verdict.error) == ("B", None)
    (outcome,) = verdict.outcomes
    assert (outcome.attempts, outcome.tokens_in) == (2, 200)
    assert outcome.raw == judgment_text(3, 7)
