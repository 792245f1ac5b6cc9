"""Feature extraction inside a real `tacit worker` (Celery, solo pool) on real Redis: killed, restarted, stopped.

Reward training used to hang at "features 0/1": the extraction pool's children inherited Celery's SIGTERM
handler, so the pool's terminate/join could wait forever. Here a worker is SIGKILLed during extraction (its
helpers must not outlive it and the job must finish on the next worker), then SIGTERMed during extraction (it
must exit in bounded time).
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

import msgspec
import pytest
from litestar.testing import TestClient

from reward_svc.app import create_app
from reward_svc.settings import RewardSettings

pytestmark = [pytest.mark.integration, pytest.mark.data, pytest.mark.slow]


def _group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _wait_group_gone(pgid: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


class Workers:
    """`tacit worker --queues cpu` processes, each in its own process group; all killed at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.started = env, logs, []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker{len(self.started)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tacit_cli.cli", "worker", "--queues", "cpu"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            for pid in _group(proc.pid):
                os.kill(pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def stack(redis_url: str, tmp_path: Path) -> Iterator[tuple[TestClient[Any], Workers]]:
    database_url = f"sqlite:///{tmp_path / 'reward.db'}"
    env = {
        **os.environ,
        "TACIT_REWARD_DATABASE_URL": database_url,
        "TACIT_REWARD_MODELS_DIR": str(tmp_path / "models"),
        "TACIT_WORKER_REDIS_URL": redis_url,
        # A message whose worker died comes back after this (12 h by default: above the longest job).
        "TACIT_WORKER_VISIBILITY_TIMEOUT_S": "4",
        # The SIGKILLed worker's run is taken over once its heartbeat (a progress step) is this old. Only a
        # redelivered task applies the limit (reward_svc's periodic reaper is left out of this test), and the one live
        # worker's solo pool takes no other task while it extracts, so a short limit cannot cut into a live run.
        "TACIT_REWARD_STALE_AFTER_S": "15",
        "TACIT_REWARD_REAP_INTERVAL_S": "3600",
        "TACIT_HOME": str(tmp_path / "home"),
    }
    workers = Workers(env, tmp_path)
    settings = RewardSettings(
        database_url=database_url,
        models_dir=str(tmp_path / "models"),
        redis_url=redis_url,
        stale_after_s=15,
        reap_interval_s=3600,
    )
    try:
        with TestClient(create_app(settings)) as client:
            yield client, workers
    finally:
        workers.stop_all()


def _submit(client: TestClient[Any], data: Path) -> str:
    spec = {"data": str(data), "seeds": 0, "model": "reference_rf", "feature_set": "all"}
    response = client.post("/v1/reward/models", content=msgspec.json.encode(spec))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _wait_for(client: TestClient[Any], model_id: str, done: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        info = client.get(f"/v1/reward/models/{model_id}").json()
        if done(info):
            return info
        time.sleep(0.05)
    raise AssertionError(f"model {model_id}: condition not reached in {timeout:.0f} s: {info}")


def _extracting(info: dict[str, Any]) -> bool:
    return info["status"] == "running" and info["progress"]["stage"] == "features" and info["progress"]["done"] == 0


def _finished(info: dict[str, Any]) -> bool:
    return info["status"] in ("succeeded", "failed")


def test_a_worker_killed_and_stopped_during_extraction(stack: tuple[TestClient[Any], Workers], ifllm_dir: Path) -> None:
    client, workers = stack
    first = workers.start()
    model_id = _submit(client, ifllm_dir)
    _wait_for(client, model_id, _extracting, 120)
    time.sleep(0.5)  # the pool is up and working
    assert len(_group(first.pid)) > 1  # the worker and its extraction helpers
    first.kill()
    first.wait(timeout=10)
    assert _wait_group_gone(first.pid, 15) == [], "extraction helpers outlived their SIGKILLed worker"

    second = workers.start()
    # redelivered after 4 s, retried until the dead worker's heartbeat is 15 s old, then extracted and trained again
    info = _wait_for(client, model_id, _finished, 360)
    assert info["status"] == "succeeded", info["error"]

    # SIGTERM (what `tacit up` sends) during extraction: a warm shutdown that ends, helpers included.
    again = _submit(client, ifllm_dir)
    _wait_for(client, again, _extracting, 120)
    time.sleep(0.5)
    start = time.monotonic()
    os.kill(second.pid, signal.SIGTERM)
    second.wait(timeout=90)
    assert _wait_group_gone(second.pid, 15) == []
    assert time.monotonic() - start < 90
