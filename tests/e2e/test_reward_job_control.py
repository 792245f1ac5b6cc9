"""Reward-training jobs managed through the gateway, with a real cpu worker: a running training is cancelled (it stops
and leaves no artifact), a queued one never runs, models are deleted (not the active one, not a running one), and a
training whose worker is killed is failed with the reason instead of staying `running`."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from reward_svc.demo import write_demo_table
from tests.e2e.conftest import CpuWorker, Stack

pytestmark = pytest.mark.e2e

#: The reward service's stale limit here: above any one step of these trainings, short enough to wait for.
STALE_S = 8


@pytest.fixture(scope="module")
def control_stack(stack: Stack) -> Stack:
    """The module's stack with reward_svc (and the workers started from its environment) on a short stale limit."""
    stack.reward.stop()
    stack.reward.env.update({"TACIT_REWARD_STALE_AFTER_S": str(STALE_S), "TACIT_REWARD_REAP_INTERVAL_S": "0.5"})
    stack.reward.start()
    return stack


@pytest.fixture(scope="module")
def tables(control_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A demo table big enough for a training of a minute or so (100 folds), and a small one for a quick training."""
    folder = tmp_path_factory.mktemp("tables")
    return {
        "long": write_demo_table(folder / "long.parquet", n=480),
        "quick": write_demo_table(folder / "q.parquet", n=96),
    }


@pytest.fixture
def worker(control_stack: Stack, cpu_worker: CpuWorker) -> CpuWorker:
    """The module's cpu worker, on the short stale limit too (started again when a test killed it)."""
    if cpu_worker.env.get("TACIT_REWARD_STALE_AFTER_S") != str(STALE_S):  # it started before control_stack
        cpu_worker.stop()
        cpu_worker.env.update({k: v for k, v in control_stack.reward.env.items() if k.startswith("TACIT_REWARD_")})
    if cpu_worker.process is None or cpu_worker.process.poll() is not None:
        cpu_worker.start()
    return cpu_worker


def _train(client: httpx.Client, table: Path, seeds: int) -> str:
    spec = {"data": str(table), "model": "reference_rf", "feature_set": "all", "seeds": seeds, "demo": True}
    answer = client.post("/v1/reward/models", json=spec)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def _wait(
    client: httpx.Client, model_id: str, done: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        info: dict[str, Any] = client.get(f"/v1/reward/models/{model_id}").json()
        if done(info):
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"model {model_id} not {what} after {timeout} s: {info}")
        time.sleep(0.2)


def _training(info: dict[str, Any]) -> bool:
    return info["status"] == "running" and info["progress"]["stage"] == "cross-validation"


def test_cancel_a_running_and_a_queued_training_then_delete_models(
    control_stack: Stack, tables: dict[str, Path], worker: CpuWorker
) -> None:
    artifacts = Path(control_stack.reward.env["TACIT_REWARD_MODELS_DIR"])
    with control_stack.client("train") as client, control_stack.client("read") as reads:
        long_id = _train(client, tables["long"], seeds=20)
        _wait(reads, long_id, _training, 90, "training")
        queued_id = _train(client, tables["quick"], seeds=1)  # the worker is busy: it waits in the queue

        busy = client.delete(f"/v1/reward/models/{long_id}")
        assert (busy.status_code, busy.json()["field"]) == (409, "status")
        assert "cancel it first" in busy.json()["detail"]

        queued = client.post(f"/v1/reward/models/{queued_id}/cancel")
        assert (queued.status_code, queued.json()["status"]) == (200, "cancelled")
        running = client.post(f"/v1/reward/models/{long_id}/cancel")
        assert running.status_code == 200, running.text
        assert (running.json()["status"], running.json()["error"]) == ("cancelled", "cancelled by request")
        stopped_at = running.json()["progress"]

        # the worker stops at its next step and is free for the next job, which trains to the end
        quick_id = _train(client, tables["quick"], seeds=1)
        quick = _wait(reads, quick_id, lambda i: i["status"] in ("succeeded", "failed"), 120, "trained")
        assert quick["status"] == "succeeded", quick["error"]
        for model_id, progress in ((long_id, stopped_at), (queued_id, {"stage": "", "done": 0, "total": 0})):
            info = reads.get(f"/v1/reward/models/{model_id}").json()
            assert (info["status"], info["active"], info["progress"]) == ("cancelled", False, progress)
            assert not (artifacts / model_id).exists()
        assert (artifacts / quick_id).is_dir()

        active = [m for m in reads.get("/v1/reward/models", params={"task": "pairwise"}).json() if m["active"]]
        assert len(active) == 1
        refused = client.delete(f"/v1/reward/models/{active[0]['id']}")
        assert (refused.status_code, refused.json()["field"]) == (409, "active")

        for model_id in (long_id, quick_id):
            deleted = client.delete(f"/v1/reward/models/{model_id}")
            assert (deleted.status_code, deleted.json()["id"]) == (200, model_id)
            assert reads.get(f"/v1/reward/models/{model_id}").status_code == 404
        assert not (artifacts / quick_id).exists()
        assert client.delete(f"/v1/reward/models/{long_id}").status_code == 404
        assert client.post(f"/v1/reward/models/{queued_id}/cancel").json()["status"] == "cancelled"  # idempotent

        # managing jobs takes the train scope
        assert reads.post(f"/v1/reward/models/{queued_id}/cancel").status_code == 403
        assert reads.delete(f"/v1/reward/models/{queued_id}").status_code == 403


def test_a_training_whose_worker_is_killed_is_failed_with_the_reason(
    control_stack: Stack, tables: dict[str, Path], worker: CpuWorker
) -> None:
    with control_stack.client("train") as client, control_stack.client("read") as reads:
        model_id = _train(client, tables["long"], seeds=20)
        _wait(reads, model_id, _training, 90, "training")
        assert worker.process is not None
        os.killpg(worker.process.pid, signal.SIGKILL)  # the worker and its task die at once: nothing acks the job
        worker.process.wait(timeout=10)
        killed = time.monotonic()
        info = _wait(reads, model_id, lambda i: i["status"] != "running", STALE_S + 20, "reaped")
        assert info["status"] == "failed"
        assert info["error"].startswith("worker lost: no heartbeat for "), info["error"]
        assert info["error"].endswith(" s")
        assert time.monotonic() - killed >= STALE_S / 2  # not long before the stale limit (less the last step's age)
        assert info["finished_at"] is not None
        assert client.delete(f"/v1/reward/models/{model_id}").status_code == 200  # a failed run can be deleted
