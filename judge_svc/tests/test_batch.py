"""POST /v1/judgments:batch and GET /v1/judgments/jobs/{id} against the loopback fake judge."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from judge_svc.app import create_app
from judge_svc.settings import JudgeSettings
from judge_svc.testing import FakeOpenAIServer, Reply, prefer_longer
from tacit.schemas.judge import BatchAccepted, BatchJob


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(prefer_longer) as fake:
        yield fake


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[TestClient[Litestar]]:
    settings = JudgeSettings(base_url=server.base_url, model="judge-model", retries=0, backoff_s=0.01, redis_url="")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def wait(client: TestClient[Litestar], url: str, timeout_s: float = 10.0) -> BatchJob:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(url)
        assert response.status_code == 200, response.text
        job = msgspec.json.decode(response.content, type=BatchJob)
        if job.status != "running" or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def item(sft_words: int, aligned_words: int, **extra: Any) -> dict[str, Any]:
    return {
        "prompt": f"Q {uuid.uuid4()}",
        "answer_a": " ".join(["s"] * sft_words),
        "answer_b": " ".join(["a"] * aligned_words),
        **extra,
    }


def test_batch_job_reports_verdicts_and_evaluation(client: TestClient[Litestar], server: FakeOpenAIServer) -> None:
    items = [item(2, 5), item(3, 1), item(4, 4), item(1, 9), item(6, 2), item(5, 8)]
    response = client.post("/v1/judgments:batch", json={"items": items, "evaluation": True})
    assert response.status_code == 202, response.text
    accepted = msgspec.json.decode(response.content, type=BatchAccepted)
    assert accepted.total == 6
    job = wait(client, accepted.status_url)
    assert job.status == "done", job.error
    assert (job.done, job.total, job.failures) == (6, 6, 0)
    assert job.verdicts is not None
    assert [v.winner for v in job.verdicts] == ["B", "A", "tie", "B", "A", "B"]  # request order kept
    assert len(server.requests) == 12  # both orders
    summary = job.evaluation
    assert summary is not None
    assert (summary.overall.wins, summary.overall.ties, summary.overall.losses) == (3, 1, 2)
    assert summary.overall.score_diff.mean == pytest.approx((4 - 4 + 0 + 4 - 4 + 4) / 6)
    assert [t.n for t in summary.terciles] == [2, 2, 2]
    assert 'tacit_judge_calls_total{outcome="ok"} 6.0' in client.get("/metrics").text


def test_batch_without_evaluation_and_with_failures(client: TestClient[Litestar], server: FakeOpenAIServer) -> None:
    server.push(Reply.malformed())
    body = {"items": [item(1, 2, both_orders=False), item(2, 1, both_orders=False)]}
    accepted = msgspec.json.decode(client.post("/v1/judgments:batch", json=body).content, type=BatchAccepted)
    job = wait(client, accepted.status_url)
    assert job.status == "done"
    assert job.evaluation is None
    assert job.failures == 1
    assert job.verdicts is not None
    winners = sorted(str(v.winner) for v in job.verdicts)  # which item got the malformed reply is a race
    assert winners in (["A", "None"], ["B", "None"])


def test_shutdown_cancels_running_jobs(server: FakeOpenAIServer) -> None:
    settings = JudgeSettings(base_url=server.base_url, model="judge-model", retries=0, redis_url="")
    server.push(Reply.slow(1.0, "late"))
    app = create_app(settings)
    with TestClient(app) as client:
        body = {"items": [item(1, 2, both_orders=False)]}
        accepted = msgspec.json.decode(client.post("/v1/judgments:batch", json=body).content, type=BatchAccepted)
        assert client.get(accepted.status_url).json()["status"] == "running"
        jobs = app.state.jobs
    job = jobs.jobs[accepted.job_id]
    assert (job.status, job.error) == ("cancelled", "service shut down")
    assert not jobs.tasks


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"items": []}, 422, "items"),
        ({"items": [item(1, 1)] * 1001}, 422, "items"),
        ({"items": [{"prompt": "", "answer_a": "a", "answer_b": "b"}]}, 422, "items[0].prompt"),
        ({"items": [item(1, 1)], "extra": 1}, 422, "$"),
    ],
)
def test_bad_batches_are_problems(client: TestClient[Litestar], body: dict[str, Any], status: int, field: str) -> None:
    response = client.post("/v1/judgments:batch", json=body)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field


def test_unknown_job_is_404(client: TestClient[Litestar]) -> None:
    response = client.get("/v1/judgments/jobs/nope")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_single_judgment_route_still_works(client: TestClient[Litestar]) -> None:
    response = client.post("/v1/judgments", json=item(1, 3))
    assert response.status_code == 200
    assert response.json()["winner"] == "B"
