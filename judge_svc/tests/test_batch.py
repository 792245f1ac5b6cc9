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
from judge_svc.jobs import SHUT_DOWN
from judge_svc.settings import JudgeSettings
from judge_svc.testing import FakeOpenAIServer, Reply, judgment_text, prefer_longer
from tacit.schemas.judge import BatchAccepted, BatchJob, BatchJobList


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
    assert job.status == "succeeded", job.error
    assert (job.done, job.total, job.failures) == (6, 6, 0)
    assert job.verdicts is not None
    assert [v.winner for v in job.verdicts] == ["B", "A", "tie", "B", "A", "B"]  # request order kept
    assert len(server.requests) == 12  # both orders
    summary = job.evaluation
    assert summary is not None
    assert (summary.overall.wins, summary.overall.ties, summary.overall.losses) == (3, 1, 2)
    assert summary.overall.score_diff.mean == pytest.approx((4 - 4 + 0 + 4 - 4 + 4) / 6)
    assert [t.n for t in summary.terciles] == [2, 2, 2]
    # prefer_longer is position-free: every pair was judged the same way in both orders
    assert (job.judged_both_orders, job.consistent, job.consistency_rate) == (6, 6, 1.0)
    assert (summary.overall.judged_both_orders, summary.overall.consistency_rate) == (6, 1.0)
    assert job.evaluation_requested is True
    assert (job.alignment_job_id, job.label) == (None, None)
    assert 'tacit_judge_calls_total{outcome="ok"} 6.0' in client.get("/metrics").text


def test_batch_without_evaluation_and_with_failures(client: TestClient[Litestar], server: FakeOpenAIServer) -> None:
    server.push(Reply.malformed())
    body = {"items": [item(1, 2, both_orders=False), item(2, 1, both_orders=False)]}
    accepted = msgspec.json.decode(client.post("/v1/judgments:batch", json=body).content, type=BatchAccepted)
    job = wait(client, accepted.status_url)
    assert job.status == "succeeded"
    assert job.evaluation is None
    assert job.failures == 1
    assert (job.judged_both_orders, job.consistent, job.consistency_rate) == (0, 0, None)  # single order only
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
    job = jobs.records.jobs[accepted.job_id]
    assert (job.status, job.error) == ("cancelled", SHUT_DOWN)
    assert not jobs.tasks
    assert not jobs.live


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"items": []}, 422, "items"),
        ({"items": [item(1, 1)] * 1001}, 422, "items"),
        ({"items": [{"prompt": "", "answer_a": "a", "answer_b": "b"}]}, 422, "items[0].prompt"),
        ({"items": [item(1, 1)], "extra": 1}, 422, "extra"),
        ({"items": [item(1, 1)], "alignment_job_id": ""}, 422, "alignment_job_id"),
        ({"items": [item(1, 1)], "label": 3}, 422, "label"),
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


def position_biased(_: dict[str, Any]) -> Reply:
    """Always prefers the answer shown first: every pair judged in both orders disagrees with itself."""
    return Reply.ok(judgment_text(8, 5))


def test_batch_status_reports_the_consistency_rate() -> None:
    def mixed(body: dict[str, Any]) -> Reply:
        biased = "biased" in body["messages"][-1]["content"]
        return position_biased(body) if biased else prefer_longer(body)

    items = [
        item(1, 5),  # consistent (B in both orders)
        item(2, 2, prompt="biased 1"),  # inconsistent: A then B
        item(3, 1),  # consistent (A in both orders)
        item(4, 4, prompt="biased 2", both_orders=False),  # one order: not counted
        item(9, 9, prompt="biased 3"),  # inconsistent
    ]
    with FakeOpenAIServer(mixed) as server:
        settings = JudgeSettings(base_url=server.base_url, model="m", retries=0, redis_url="")
        with TestClient(create_app(settings)) as client:
            accepted = client.post("/v1/judgments:batch", json={"items": items, "evaluation": True}).json()
            job = wait(client, accepted["status_url"])
    assert job.status == "succeeded"
    assert job.verdicts is not None
    assert [v.consistent for v in job.verdicts] == [True, False, True, None, False]
    assert (job.judged_both_orders, job.consistent) == (4, 2)
    assert job.consistency_rate == pytest.approx(0.5)
    assert job.evaluation is not None
    assert (job.evaluation.overall.judged_both_orders, job.evaluation.overall.consistent) == (4, 2)
    assert job.evaluation.overall.consistency_rate == pytest.approx(0.5)


def test_metadata_is_echoed_listed_and_plotted(client: TestClient[Litestar]) -> None:
    alignment = f"align-{uuid.uuid4().hex}"
    body = {"items": [item(2, 5), item(3, 1), item(4, 4)], "evaluation": True, "alignment_job_id": alignment}
    evaluation = client.post("/v1/judgments:batch", json={**body, "label": "DPO vs SFT"}).json()
    other = client.post("/v1/judgments:batch", json={"items": [item(1, 1)]}).json()
    job = wait(client, evaluation["status_url"])
    assert (job.status, job.alignment_job_id, job.label) == ("succeeded", alignment, "DPO vs SFT")
    wait(client, other["status_url"])

    listed = msgspec.json.decode(
        client.get("/v1/judgments/jobs", params={"alignment_job_id": alignment}).content, type=BatchJobList
    )
    assert [j.job_id for j in listed.jobs] == [evaluation["job_id"]]
    assert listed.jobs[0].verdicts is None
    assert listed.jobs[0].evaluation == job.evaluation
    everything = client.get("/v1/judgments/jobs").json()["jobs"]
    assert [j["job_id"] for j in everything] == [other["job_id"], evaluation["job_id"]]  # newest first
    assert client.get("/v1/judgments/jobs", params={"alignment_job_id": "none-such"}).json() == {"jobs": []}

    plot = client.get(f"{evaluation['status_url']}/plot.png")
    assert plot.status_code == 200
    assert plot.headers["content-type"] == "image/png"
    assert plot.content[:8] == b"\x89PNG\r\n\x1a\n"
    not_evaluation = client.get(f"{other['status_url']}/plot.png")
    assert (not_evaluation.status_code, not_evaluation.json()["code"]) == (409, "not_an_evaluation")
    missing = client.get("/v1/judgments/jobs/nope/plot.png")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


def test_plot_of_a_running_evaluation_is_a_conflict(server: FakeOpenAIServer) -> None:
    settings = JudgeSettings(base_url=server.base_url, model="judge-model", retries=0, redis_url="")
    server.push(Reply.slow(1.0, judgment_text(5, 6)))
    with TestClient(create_app(settings)) as client:
        body = {"items": [item(1, 2, both_orders=False)], "evaluation": True}
        accepted = client.post("/v1/judgments:batch", json=body).json()
        response = client.get(f"{accepted['status_url']}/plot.png")
        assert response.status_code == 409
        assert response.json()["code"] == "not_ready"
        assert "still running" in response.json()["detail"]


@pytest.mark.parametrize(
    ("query", "field"), [({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"), ({"alignment": "a"}, "alignment")]
)
def test_bad_listing_queries(client: TestClient[Litestar], query: dict[str, str], field: str) -> None:
    response = client.get("/v1/judgments/jobs", params=query)
    assert response.status_code == 422
    assert response.json()["field"] == field
