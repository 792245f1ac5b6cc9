"""The stack as real processes on loopback: feature_svc, reward_svc (with a demo model) and the gateway."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from gateway.keys import create_key
from judge_svc.testing import FakeOpenAIServer, prefer_longer
from reward_svc.demo import write_demo_table
from reward_svc.registry import Registry
from reward_svc.service import run_training
from tacit.db import Store
from tacit.schemas import TrainRewardModel


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc), for the memory checks of the e2e and reliability tests."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """One service process: started with its environment, waited for on /healthz, stopped cleanly."""

    name: str
    args: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> Service:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.log_path}\n{self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become healthy: see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


def demo_reward_registry(folder: Path) -> str:
    """A reward registry (`<folder>/reward.db`, models in `<folder>/models`) with an active demo pairwise model."""
    reward_db = f"sqlite:///{folder / 'reward.db'}"
    registry = Registry(reward_db)
    row = registry.create(task="pairwise", model_name="reference_rf", feature_set="all", spec={}, demo=True)
    spec = TrainRewardModel(
        data=str(write_demo_table(folder / "demo.parquet", n=120)),
        model="reference_rf",
        feature_set="all",
        seeds=0,
        activate=True,
        demo=True,
    )
    assert run_training(registry, row.id, spec, folder / "models").status == "succeeded"
    registry.close()
    return reward_db


@dataclass
class Stack:
    gateway: Service
    features: Service
    reward: Service
    judge: Service
    database_url: str
    keys: dict[str, str]

    def headers(self, scope: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}", "content-type": "application/json"}

    def client(self, scope: str = "admin") -> httpx.Client:
        return httpx.Client(base_url=self.gateway.url, headers=self.headers(scope), timeout=30)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('gateway') / 'gateway.db'}"
    return str(request.getfixturevalue("module_postgres_url"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str) -> Iterator[Stack]:
    """One stack per database flavour for the module (tests use their own user ids)."""
    tmp_path = tmp_path_factory.mktemp("stack")
    env: dict[str, Any] = {**os.environ, "TACIT_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    reward_db = demo_reward_registry(tmp_path)

    # A clean gateway schema for this test (PostgreSQL databases live for the test session).
    store = Store(database_url)
    store.migrate()
    keys = {scope: create_key(store, [scope], f"test-{scope}")[0] for scope in ("ingest", "read", "train", "admin")}
    store.close()

    cli = [sys.executable, "-m", "tacit_cli.cli", "serve"]
    features = Service(
        "feature_svc",
        [*cli, "features"],
        {**env, "TACIT_FEATURES_PORT": str(free_port())},
        0,
        tmp_path / "features.log",
    )
    features.port = int(features.env["TACIT_FEATURES_PORT"])
    reward_port = free_port()
    reward = Service(
        "reward_svc",
        [*cli, "reward"],
        {
            **env,
            "TACIT_REWARD_PORT": str(reward_port),
            "TACIT_REWARD_DATABASE_URL": reward_db,
            "TACIT_REWARD_MODELS_DIR": str(tmp_path / "models"),
            "TACIT_REWARD_REDIS_URL": redis_url,
        },
        reward_port,
        tmp_path / "reward.log",
    )
    # judge_svc in front of a named test double of an OpenAI-compatible LLM server (it prefers longer answers).
    fake_llm = FakeOpenAIServer(prefer_longer).start()
    judge_port = free_port()
    judge = Service(
        "judge_svc",
        [*cli, "judge"],
        {
            **env,
            "TACIT_JUDGE_PORT": str(judge_port),
            "TACIT_JUDGE_BASE_URL": fake_llm.base_url,
            "TACIT_JUDGE_MODEL": "fake-judge",
            "TACIT_JUDGE_REDIS_URL": redis_url,
        },
        judge_port,
        tmp_path / "judge.log",
    )
    gateway_port = free_port()
    gateway = Service(
        "gateway",
        [*cli, "gateway"],
        {
            **env,
            "TACIT_GATEWAY_PORT": str(gateway_port),
            "TACIT_GATEWAY_DATABASE_URL": database_url,
            "TACIT_GATEWAY_FEATURE_URL": features.url,
            "TACIT_GATEWAY_REWARD_URL": reward.url,
            "TACIT_GATEWAY_JUDGE_URL": judge.url,
            "TACIT_GATEWAY_REDIS_URL": redis_url,
            "TACIT_GATEWAY_RESCORE_INTERVAL_S": "0.3",
            "TACIT_GATEWAY_TIMEOUT_S": "2",
            "TACIT_GATEWAY_RETRIES": "1",
            "TACIT_COLLECTOR_DEMO": "true",  # off by default; the browser demo test drives /demo
        },
        gateway_port,
        tmp_path / "gateway.log",
    )
    started = []
    try:
        for service in (features, reward, judge, gateway):
            started.append(service.start())  # noqa: PERF401 (one by one: stop what started if a later one fails)
        yield Stack(
            gateway=gateway, features=features, reward=reward, judge=judge, database_url=database_url, keys=keys
        )
    finally:
        for service in reversed(started):
            service.stop()
        fake_llm.stop()


@dataclass
class CpuWorker:
    """`tacit worker --queues cpu` on the stack's Redis and gateway database (imports, reward training, rescoring),
    with reward_svc's registry and model folder and the services' URLs, as `tacit up` starts it."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> CpuWorker:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tacit_cli.cli", "worker", "--queues", "cpu"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while b"ready." not in self.log_path.read_bytes()[offset:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cpu worker not ready:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def cpu_worker(stack: Stack, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CpuWorker]:
    """A cpu worker for the module's stack (a test may stop and start it again)."""
    env = {
        **stack.reward.env,
        "TACIT_WORKER_REDIS_URL": redis_url,
        "TACIT_WORKER_DATABASE_URL": stack.database_url,
        "TACIT_WORKER_FEATURE_URL": stack.features.url,
        "TACIT_WORKER_REWARD_URL": stack.reward.url,
    }
    worker = CpuWorker(env, tmp_path_factory.mktemp("cpu-worker") / "worker.log")
    try:
        yield worker.start()
    finally:
        worker.stop()
