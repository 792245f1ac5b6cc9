"""An alignment job whose judge evaluation failed says so: `result.evaluation.status` is read from judge_svc."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

from gateway.alignment import evaluation_outcome
from gateway.app import create_app
from gateway.keys import create_key
from gateway.testing import judge_only_settings
from gateway.tests.test_alignment_store import SUMMARY, _pair
from judge_svc.app import create_app as judge_app
from judge_svc.settings import JudgeSettings
from tacit.db import Store
from tacit.schemas.align import EvaluationLink
from tacit.schemas.judge import BatchJob
from tacit.serving import background_server


@pytest.fixture
def judge_url() -> Iterator[str]:
    """judge_svc whose LLM endpoint nothing listens on (port 9): every pair fails."""
    settings = JudgeSettings(base_url="http://127.0.0.1:9/v1", redis_url="", retries=0)
    with background_server(judge_app(settings)) as url:
        yield url


def _finished_job(store: Store, evaluation: dict[str, object]) -> str:
    jobs = store.alignment
    job_id = jobs.create("rdpo", {"kind": "rdpo", "base_model": "m"}, SUMMARY, [_pair(1, ("a",))], created_by="k").id
    jobs.claim(job_id, "w1")
    result = {"sft_model": "s", "aligned_model": "a", "artifacts": [], "stages": [], "evaluation": evaluation}
    jobs.finish(job_id, "succeeded", result=result)
    return job_id


def test_a_succeeded_job_whose_judge_failed_on_every_pair_says_its_evaluation_failed(
    tmp_path: Path, judge_url: str
) -> None:
    # The worker's hand-off, as align_worker.tasks.judge_handoff sends it.
    items = [{"prompt": f"q{i}", "answer_a": "sft", "answer_b": "aligned"} for i in range(4)]
    accepted = httpx.post(f"{judge_url}/v1/judgments:batch", json={"items": items, "evaluation": True}, timeout=10)
    judge_job = accepted.json()["job_id"]
    deadline = time.monotonic() + 10
    while httpx.get(f"{judge_url}/v1/judgments/jobs/{judge_job}").json()["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)

    settings = judge_only_settings(tmp_path, judge_url)
    with TestClient(create_app(settings)) as client:
        store = Store(settings.database_url)
        try:
            token, _ = create_key(store, ["read"])
            running = {"prompts": 4, "answers_path": "x", "judge_job_id": judge_job, "status": "running"}
            job_id = _finished_job(store, running)
            handoff = _finished_job(store, {"prompts": 4, "answers_path": "x", "error": "judge request failed: boom"})
        finally:
            store.close()
        headers = {"Authorization": f"Bearer {token}"}
        job = client.get(f"/v1/alignment/jobs/{job_id}", headers=headers).json()
        assert job["status"] == "succeeded"  # training did succeed
        evaluation = job["result"]["evaluation"]
        assert (evaluation["status"], evaluation["failures"]) == ("failed", 4)
        assert evaluation["error"].startswith("the judge failed on all 4 pairs: ")
        assert "cannot connect to the judge LLM at http://127.0.0.1:" in evaluation["error"]
        # a job stored before the field existed, whose hand-off failed
        old = client.get(f"/v1/alignment/jobs/{handoff}", headers=headers).json()["result"]["evaluation"]
        assert (old["status"], old["error"]) == ("failed", "judge request failed: boom")


def test_evaluation_outcome_of_a_judge_job() -> None:
    link = EvaluationLink(prompts=3, answers_path="x", judge_job_id="j", status="running")
    job = BatchJob(job_id="j", status="running", done=1, total=3)
    assert evaluation_outcome(link, job).status == "running"
    partly = msgspec.structs.replace(job, status="succeeded", done=3, failures=1)
    assert (evaluation_outcome(link, partly).status, evaluation_outcome(link, partly).failures) == ("succeeded", 1)
    died = msgspec.structs.replace(job, status="failed", error="judge_svc crashed")
    outcome = evaluation_outcome(link, died)
    assert (outcome.status, outcome.error) == ("failed", "judge job j failed: judge_svc crashed")
