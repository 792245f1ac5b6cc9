"""Alignment jobs end to end: the gateway, a real Celery worker process on a real Redis, trl on a tiny model.

Scored sessions -> POST /v1/alignment/jobs -> SFT then robust DPO + NLL -> succeeded, with progress, events,
artifacts and the judge's evaluation; a worker SIGKILLed mid-job is replaced and the job resumes from its
checkpoint with exactly one result; a cancel stops the job within a step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from tacit.client import TacitClient
from tacit.schemas.align import AlignmentJobInfo
from tacit.simulate import simulate_sessions
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

FAST = {
    "sft": {"epochs": 1, "learning_rate": 1e-3, "warmup_steps": 0, "optimizer": "adamw_torch", "max_length": 128},
    "dpo": {
        "learning_rate": 5e-4,
        "warmup_steps": 0,
        "optimizer": "adamw_torch",
        "max_length": 128,
        "max_prompt_length": 48,
        "batch_size": 4,
    },
}


class Worker:
    """`tacit worker --queues align` as a process of its own group (SIGKILL takes it whole)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Worker:
        marker = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tacit_cli.cli", "worker", "--queues", "align"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.log.read_text()[-3000:]}")
            if b"ready." in self.log.read_bytes()[marker:]:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="module")
def demo_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from align_worker.training.demo_model import build_demo_model

    out = tmp_path_factory.mktemp("demo-lm")
    build_demo_model(out)
    return out


@pytest.fixture(scope="module")
def worker_env(stack: Stack, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("align-work")
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TACIT_HOME": str(work / "home"),
        "TACIT_WORKER_REDIS_URL": redis_url,
        "TACIT_WORKER_DATABASE_URL": stack.database_url,
        "TACIT_WORKER_WORK_DIR": str(work / "jobs"),
        "TACIT_WORKER_JUDGE_URL": stack.judge.url,
        # Short enough for a test: Redis hands back an unacknowledged job after 8 s, and a job silent for 3 s
        # belongs to a dead worker (its live worker beats every 0.5 s).
        "TACIT_WORKER_VISIBILITY_TIMEOUT_S": "8",
        "TACIT_WORKER_STALE_AFTER_S": "3",
        "TACIT_WORKER_HEARTBEAT_S": "0.5",
    }


@pytest.fixture(scope="module")
def worker(worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(worker_env, tmp_path_factory.mktemp("logs") / "worker.log").start()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def scored(stack: Stack) -> int:
    """72 pairwise sessions from 6 users, scored by the stack's (demo) reward model."""
    sessions = simulate_sessions(72, seed=11, samples=300)
    with stack.client("ingest") as http:
        for i, session in enumerate(sessions):
            import msgspec

            body = msgspec.structs.replace(session, session_id=f"align-{i}", user_id=f"align-user-{i % 6}")
            assert http.post("/v1/sessions", content=msgspec.json.encode(body)).status_code == 200
    return len(sessions)


def _client(stack: Stack, scope: str = "admin") -> TacitClient:
    return TacitClient(stack.gateway.url, stack.keys[scope], timeout=60)


def _spec(demo_lm: Path, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "kind": "rdpo",
        "base_model": str(demo_lm),
        "data": {"include_demo": True, "test_fraction": 0.2},
        "runtime": {"checkpoint_every": 4},
        "evaluation": {"prompts": 4, "max_new_tokens": 8},
        **FAST,
    }
    spec.update(overrides)
    return spec


def _wait(
    client: TacitClient, job_id: str, until: Any, timeout: float = 240
) -> tuple[AlignmentJobInfo, list[AlignmentJobInfo]]:
    seen: list[AlignmentJobInfo] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.alignment_job(job_id)
        seen.append(job)
        if until(job):
            return job, seen
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never got there: {seen[-1] if seen else None}")


def _done(job: AlignmentJobInfo) -> bool:
    return job.status in ("succeeded", "failed", "cancelled")


def test_a_job_trains_sft_then_robust_dpo_and_hands_off_to_the_judge(
    stack: Stack, worker: Worker, scored: int, demo_lm: Path
) -> None:
    with _client(stack) as client:
        job = client.create_alignment_job(_spec(demo_lm))
        assert job.status == "queued"
        assert job.data.source == "implicit"
        assert job.data.pairs >= 60
        assert job.data.test > 0
        assert job.data.dropped == {}
        job, seen = _wait(client, job.id, _done)
        assert job.status == "succeeded", job.error
    running = [j for j in seen if j.status == "running" and j.progress.step > 0]
    assert running, "progress was never visible while the job ran"
    assert any(j.progress.loss is not None and j.progress.stage in ("sft", "rdpo") for j in running)
    result = job.result
    assert result is not None
    sft, rdpo = result.stages
    assert (sft.stage, rdpo.stage) == ("sft", "rdpo")
    assert sft.loss_last is not None
    assert sft.loss_first is not None
    assert sft.loss_last < sft.loss_first
    assert rdpo.train_margin_after is not None
    assert rdpo.train_margin_before is not None
    assert rdpo.train_margin_after > rdpo.train_margin_before
    assert sft.weight_change > 0
    assert rdpo.weight_change > 0
    artifacts = {a.name: a for a in result.artifacts}
    for name in ("sft/final/model.safetensors", "dpo/final/model.safetensors", "evaluation/answers.jsonl"):
        assert artifacts[name].bytes > 0
        assert Path(artifacts[name].path).is_file()
    assert job.attempts == 1

    with _client(stack, "read") as client:
        kinds = [e.kind for e in client.alignment_events(job.id)]  # the stream ends with the job
        assert kinds[0] == "queued"
        assert kinds[-1] == "succeeded"
        assert {"started", "progress", "checkpoint", "stage_done", "evaluation"} <= set(kinds)
        # The judge compares SFT (A) with the aligned model (B) on the held-out prompts.
        deadline = time.monotonic() + 60
        while True:
            evaluation = httpx.get(
                f"{stack.gateway.url}/v1/alignment/jobs/{job.id}/evaluation", headers=stack.headers("read")
            ).json()
            if evaluation["status"] != "running" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert evaluation["status"] == "succeeded"
        assert evaluation["alignment_job_id"] == job.id
        assert result.evaluation is not None
        assert evaluation["evaluation"]["pairs"] == result.evaluation.prompts
        typed = client.alignment_evaluation(job.id)
        assert (typed.status, typed.alignment_job_id) == ("succeeded", job.id)
        # The job itself says how its evaluation went (read from judge_svc), not only how training went.
        info = httpx.get(f"{stack.gateway.url}/v1/alignment/jobs/{job.id}", headers=stack.headers("read")).json()
        assert (info["status"], info["result"]["evaluation"]["status"]) == ("succeeded", "succeeded")
        assert info["result"]["evaluation"]["failures"] == evaluation["failures"]


def test_a_killed_worker_is_replaced_and_the_job_resumes_with_one_result(
    stack: Stack, worker: Worker, scored: int, demo_lm: Path
) -> None:
    spec = _spec(demo_lm, evaluation=None)
    spec["sft"] = {**FAST["sft"], "epochs": 4}
    spec["runtime"] = {"checkpoint_every": 3}
    with _client(stack) as client:
        job = client.create_alignment_job(spec)
        _wait(client, job.id, lambda j: j.progress.stage == "sft" and j.progress.step >= 5)
        worker.kill()
        worker.start()
        job, _ = _wait(client, job.id, _done)
        assert job.status == "succeeded", job.error
        assert job.attempts == 2
        events = list(client.alignment_events(job.id))
    kinds = [e.kind for e in events]
    assert kinds.count("succeeded") == 1
    assert [k for k in kinds if k in ("succeeded", "failed", "cancelled")] == ["succeeded"]
    assert "resumed" in kinds
    resumed_at = kinds.index("resumed")
    sft_restart = next(e for e in events[resumed_at:] if e.kind == "stage")
    assert sft_restart.data == {"stage": "sft", "resume_from": sft_restart.data["resume_from"]}
    assert sft_restart.data["resume_from"].startswith("checkpoint-")


def test_cancel_stops_a_running_job_within_a_step(stack: Stack, worker: Worker, scored: int, demo_lm: Path) -> None:
    spec = _spec(demo_lm, evaluation=None)
    spec["sft"] = {**FAST["sft"], "epochs": 50}
    with _client(stack) as client:
        job = client.create_alignment_job(spec)
        _wait(client, job.id, lambda j: j.status == "running" and j.progress.step >= 2)
        answer = client.cancel_alignment_job(job.id)
        assert answer.cancel_requested is True
        step_at_cancel = client.alignment_job(job.id).progress.step
        job, _ = _wait(client, job.id, _done, timeout=60)
        assert job.status == "cancelled"
        # It stops at the end of the step in progress when the request arrived (+1 for the progress write lag).
        assert job.progress.step <= step_at_cancel + 2
        assert job.progress.step < job.progress.total
        with pytest.raises(Exception, match="cancelled"):
            client.cancel_alignment_job(job.id)


def test_bad_job_specs_are_refused_and_nothing_is_stored(stack: Stack, scored: int, demo_lm: Path) -> None:
    with _client(stack) as client:
        before = len(client.alignment_jobs(limit=500))
    cases = [
        ({"kind": "rdpo"}, "base_model"),
        ({"kind": "ppo", "base_model": "x"}, "kind"),
        ({**_spec(demo_lm), "dpo": {"beta": -1}}, "beta"),
        ({**_spec(demo_lm), "bogus": 1}, "bogus"),
        ({**_spec(demo_lm), "data": {"source": "implicit"}}, "data"),  # only demo-model scores: refused
        ({**_spec(demo_lm), "data": {"source": "implicit", "model_id": "nope", "include_demo": True}}, "data"),
    ]
    for body, field in cases:
        response = httpx.post(f"{stack.gateway.url}/v1/alignment/jobs", json=body, headers=stack.headers("train"))
        assert 400 <= response.status_code < 500, (body, response.text)
        assert field in response.text
    response = httpx.post(f"{stack.gateway.url}/v1/alignment/jobs", json=_spec(demo_lm), headers=stack.headers("read"))
    assert response.status_code == 403
    with _client(stack) as client:
        assert len(client.alignment_jobs(limit=500)) == before


EXPORT = [sys.executable, "-m", "tacit_cli.cli", "align", "export"]


def test_export_writes_the_pairs_a_job_would_train_on(stack: Stack, scored: int, tmp_path: Path) -> None:
    out = tmp_path / "pairs"
    done = subprocess.run(
        [*EXPORT, "--out", str(out), "--gateway", stack.gateway.url, "--key", stack.keys["read"], "--include-demo"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    import json

    from tacit.pairs import read_jsonl

    summary = json.loads((out / "summary.json").read_text())
    train, test = read_jsonl(out / "train.jsonl"), read_jsonl(out / "test.jsonl")
    assert (len(train), len(test)) == (summary["train"], summary["test"])
    assert {p.split for p in train} == {"train"}
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert all(0.5 <= p.confidence <= 1.0 for p in train)


@pytest.mark.data
def test_export_of_explicit_labels_from_an_ifllm_folder(ifllm_small: Path, tmp_path: Path) -> None:
    from tacit.ifllm.reader import Dataset
    from tacit.pairs import read_jsonl

    out = tmp_path / "pairs"
    done = subprocess.run(
        [*EXPORT, "--out", str(out), "--data", str(ifllm_small), "--source", "explicit"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pairs = read_jsonl(out / "train.jsonl") + read_jsonl(out / "test.jsonl")
    assert pairs
    assert all(p.source == "explicit" and p.confidence == 1.0 for p in pairs)
    # The side the worker stated is the chosen one (label 1 = right; the reference inverted it: P6).
    by_query = {str(q.query_id): q for q in Dataset(ifllm_small).queries}
    checked = 0
    for pair in pairs:
        for session_id in pair.sessions:
            query = by_query.get(session_id.removeprefix("ifllm-"))
            if query is None or query.mode != "pairwise" or query.label is None or query.response_2 is None:
                continue
            right, left = query.response_2.strip(), query.response_1.strip()
            expected = right if query.label == 1 else left
            assert pair.chosen.strip() == expected
            checked += 1
    assert checked > 0
