"""`tacit up` hardening (issue 14): supervision with backoff, a restart right after a stop, Redis with a password
and an append-only file, a private home, one bootstrap admin key, orphaned alignment jobs reaped, demo banner."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from tacit_cli.tests.test_up import REDIS_SERVER, needs_redis_server
from tacit_cli.up import (
    KEY_FILE,
    Service,
    Stack,
    Supervisor,
    _banner,
    _demo_env,
    bootstrap_admin_key,
    free_port,
    judge_status,
    port_free,
    reap_alignment_jobs,
    redact,
    redis_ping,
    redis_service,
    secure_home,
)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


@pytest.fixture
def started() -> Iterator[list[Service]]:
    services: list[Service] = []
    yield services
    for service in services:
        service.stop(timeout=2)


# -- a restart right after a stop ---------------------------------------------------------------------------


def test_a_port_left_in_time_wait_by_a_stopped_stack_counts_as_free() -> None:
    """The launcher's own check refused a restart for 40-60 s: the old gateway's closed connections sat in
    TIME_WAIT, and a bind without SO_REUSEADDR (unlike uvicorn's own) fails on them."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's and redis-server's listeners
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    clients = []
    for _ in range(3):
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = listener.accept()
        conn.close()  # the server closes first: its side of the connection waits in TIME_WAIT
        clients.append(client)
    time.sleep(0.1)
    for client in clients:
        client.close()
    listener.close()
    with socket.socket() as plain, pytest.raises(OSError, match="in use"):
        plain.bind(("127.0.0.1", port))  # the reproduction: what the old check did
    assert port_free(port)


# -- supervision --------------------------------------------------------------------------------------------


def test_a_crashing_child_is_restarted_with_backoff_and_the_rest_stays_up(
    tmp_path: Path, started: list[Service]
) -> None:
    steady = Service("steady", _python("import time; time.sleep(60)"), tmp_path / "steady.log")
    crashing = Service("crashing", _python("import sys, time; time.sleep(0.2); sys.exit(3)"), tmp_path / "c.log")
    started += [steady.start(), crashing.start()]
    said: list[tuple[float, str]] = []
    supervisor = Supervisor(started, lambda m: said.append((time.monotonic(), m)), base=0.2, cap=0.8, stable=30)
    steady_pid = steady.pid
    deadline = time.monotonic() + 30
    while supervisor.restarts["crashing"] < 4 and time.monotonic() < deadline:
        supervisor.tick()
        time.sleep(0.02)
    assert steady.pid == steady_pid
    assert steady.running
    assert supervisor.restarts == {"steady": 0, "crashing": 4}
    exits = [m for _, m in said if m.startswith("crashing exited with code 3")]
    delays = [float(m.split("restarting it in ")[1].split(" s")[0]) for m in exits]
    assert delays[:4] == [0.2, 0.4, 0.8, 0.8]  # doubling, capped
    assert any(m.startswith("restarted crashing (pid ") for _, m in said)


def test_a_killed_child_is_back_and_its_leftover_helpers_are_killed(tmp_path: Path, started: list[Service]) -> None:
    helper_pid = tmp_path / "helper"
    parent = Service(
        "parent",
        _python(f"""
            import pathlib, subprocess, sys, time
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            pathlib.Path({str(helper_pid)!r}).write_text(str(child.pid))
            time.sleep(60)
        """),
        tmp_path / "parent.log",
        probe=helper_pid.exists,
    )
    started.append(parent.start().wait_ready(20))
    time.sleep(0.1)
    helper = int(helper_pid.read_text())
    helper_pid.unlink()
    said: list[str] = []
    restarted: list[tuple[str, int | None]] = []
    supervisor = Supervisor(
        started, said.append, on_restart=lambda s, code: restarted.append((s.name, code)), base=0.1, stable=30
    )
    assert parent.process is not None
    parent.process.kill()
    parent.process.wait()
    deadline = time.monotonic() + 10
    while not any("is back" in m for m in said) and time.monotonic() < deadline:
        supervisor.tick()
        time.sleep(0.05)
    assert restarted == [("parent", -9)]
    assert parent.running
    assert any(m.startswith("parent exited with code -9") for m in said)
    assert any(m.startswith("parent is back") for m in said)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{helper}").exists():
        if Path(f"/proc/{helper}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.05)
    state = (
        Path(f"/proc/{helper}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if Path(f"/proc/{helper}").exists()
        else "gone"
    )
    assert state in ("Z", "gone")


# -- Redis ----------------------------------------------------------------------------------------------------


@needs_redis_server
def test_embedded_redis_needs_its_password_and_keeps_data_across_a_restart(
    tmp_path: Path, started: list[Service]
) -> None:
    import redis

    assert REDIS_SERVER is not None
    first = redis_service(REDIS_SERVER, tmp_path)
    assert first.url is not None
    password = (tmp_path / "redis" / "password").read_text().strip()
    assert password not in " ".join(first.argv)  # not on the command line, where every local user can read it
    assert f":{password}@" in first.url
    assert redact(first.url) == first.url.replace(password, "***")
    for private in (tmp_path / "redis" / "password", tmp_path / "redis" / "redis.conf"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    started.append(first.start().wait_ready(20))
    anonymous = redis.Redis.from_url(redact(first.url).replace(":***@", "@"))
    with pytest.raises(redis.AuthenticationError):
        anonymous.set("x", "1")
    anonymous.close()
    client = redis.Redis.from_url(first.url)
    client.rpush("align", "queued-job")
    client.close()
    time.sleep(1.2)  # appendfsync everysec
    first.stop()

    again = redis_service(REDIS_SERVER, tmp_path)  # a new port, the same directory and password
    started.append(again.start().wait_ready(20))
    assert again.url is not None
    assert f":{password}@" in again.url
    client = redis.Redis.from_url(again.url)
    assert client.lrange("align", 0, -1) == [b"queued-job"]
    client.close()
    assert redis_ping(again.url)


# -- the home -------------------------------------------------------------------------------------------------


def test_secure_home_closes_the_home_and_what_is_in_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    home.chmod(0o755)
    (home / "logs").chmod(0o755)
    for name in ("gateway.db", "logs/gateway.log"):
        (home / name).write_text("x")
        (home / name).chmod(0o644)
    (home / "link").symlink_to("/etc/hostname")
    secure_home(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "logs").stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "gateway.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "logs" / "gateway.log").stat().st_mode) == 0o600
    assert stat.S_IMODE(Path("/etc/hostname").stat().st_mode) & 0o044  # a link's target is left alone


def test_what_children_write_under_tacit_ups_umask_is_private(tmp_path: Path) -> None:
    previous = os.umask(0o077)
    try:
        service = Service("writer", _python(f"open({str(tmp_path / 'db')!r}, 'w').write('x')"), tmp_path / "w.log")
        service.start()
        assert service.process is not None
        service.process.wait(timeout=20)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "db").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "w.log").stat().st_mode) == 0o600


# -- the bootstrap admin key ---------------------------------------------------------------------------------


def test_one_bootstrap_key_reused_then_rotated(tmp_path: Path) -> None:
    db = pytest.importorskip("tacit.db")
    keys = pytest.importorskip("gateway.keys")
    env = {"TACIT_HOME": str(tmp_path)}
    store = db.Store(f"sqlite:///{tmp_path / 'gateway.db'}")
    store.migrate()
    piled = [keys.create_key(store, ["admin"], "up")[0] for _ in range(3)]  # what earlier versions left
    other, _ = keys.create_key(store, ["ingest"], "my app")
    try:
        first = bootstrap_admin_key(env, tmp_path)
        assert first.token is not None
        assert first.revoked == 3
        assert first.path == tmp_path / KEY_FILE
        assert first.path.read_text().strip() == first.token
        assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
        assert all(keys.authenticate(store, token) is None for token in piled)
        assert keys.authenticate(store, other) is not None  # not a tacit up key: untouched

        for _ in range(3):  # later starts: the same key, not shown again, no new row
            again = bootstrap_admin_key(env, tmp_path)
            assert again.token is None
        live = [k for k in keys.list_keys(store) if k.name == "up" and k.revoked_at is None]
        assert len(live) == 1
        assert keys.authenticate(store, first.token) is not None

        rotated = bootstrap_admin_key(env, tmp_path, rotate=True)
        assert rotated.token not in (None, first.token)
        assert rotated.revoked == 1
        assert keys.authenticate(store, first.token) is None
        assert first.path.read_text().strip() == rotated.token

        first.path.write_text("tacit_not-a-key\n")  # edited or stale: replaced, never trusted
        replaced = bootstrap_admin_key(env, tmp_path)
        assert replaced.token is not None
        assert keys.authenticate(store, replaced.token) is not None
    finally:
        store.close()


def test_the_banner_shows_a_new_key_once_and_says_where_it_is_after(tmp_path: Path) -> None:
    pytest.importorskip("gateway.keys")
    env = {"TACIT_HOME": str(tmp_path)}
    stack = Stack(home=tmp_path)
    shown = io.StringIO()
    key = bootstrap_admin_key(env, tmp_path)
    _banner(stack, key, None, 8100, None, shown)
    assert f"admin key: {key.token}" in shown.getvalue()
    later = io.StringIO()
    _banner(stack, bootstrap_admin_key(env, tmp_path), None, 8100, None, later)
    assert str(key.token) not in later.getvalue()
    assert f"admin key: in {tmp_path / KEY_FILE}" in later.getvalue()
    assert f"console login link: http://127.0.0.1:8100/console#key={key.token}" in shown.getvalue()
    assert "console#key=" not in later.getvalue()


def test_the_banner_names_the_pages_and_the_judge(tmp_path: Path) -> None:
    out = io.StringIO()
    _banner(Stack(home=tmp_path), None, "n/a", 8100, None, out, demo=True, judge=judge_status({}))
    text = out.getvalue()
    assert "API docs      http://127.0.0.1:8100/schema" in text
    assert "console       http://127.0.0.1:8100/console" in text
    assert "http://127.0.0.1:8100/demo" in text
    assert "judge         no LLM endpoint configured" in text
    assert "set TACIT_JUDGE_BASE_URL" in text


def test_judge_status_reads_the_judge_settings() -> None:
    assert judge_status({}).startswith("no LLM endpoint configured: judgments answer 503 not_configured")
    assert "TACIT_JUDGE_SETTINGS_FILE" in judge_status({})
    env = {"TACIT_JUDGE_BASE_URL": "https://api.openai.com/v1", "TACIT_JUDGE_MODEL": "gpt-4.1"}
    assert (
        judge_status(env) == "LLM endpoint https://api.openai.com/v1, model gpt-4.1, no API key (TACIT_JUDGE_API_KEY)"
    )
    assert judge_status(env | {"TACIT_JUDGE_API_KEY": "sk-x"}).endswith("with an API key")
    assert "sk-x" not in judge_status(env | {"TACIT_JUDGE_API_KEY": "sk-x"})
    assert judge_status({"TACIT_JUDGE_BACKEND": "local", "TACIT_JUDGE_MODEL": "/m"}) == (
        "local model /m (TACIT_JUDGE_BACKEND=local)"
    )
    assert judge_status({"TACIT_JUDGE_PORT": "0"}).startswith("misconfigured: TACIT_JUDGE_*")


# -- demo pages -------------------------------------------------------------------------------------------------


def test_demo_pages_on_for_the_loopback_stack_unless_said_otherwise_and_the_banner_says_so(tmp_path: Path) -> None:
    assert _demo_env({}) == {"TACIT_COLLECTOR_DEMO": "true"}
    assert _demo_env({"TACIT_COLLECTOR_DEMO": "false"}) == {}
    on, off = io.StringIO(), io.StringIO()
    _banner(Stack(home=tmp_path), None, "n/a", 8100, None, on, demo=True)
    _banner(Stack(home=tmp_path), None, "n/a", 8100, None, off, demo=False)
    assert "demo pages    ON at http://127.0.0.1:8100/demo" in on.getvalue()
    assert "demo pages    off: http://127.0.0.1:8100/demo answers 404" in off.getvalue()


# -- orphaned alignment jobs -----------------------------------------------------------------------------------


def test_jobs_left_running_by_an_earlier_stack_are_failed_with_the_reason(tmp_path: Path) -> None:
    pytest.importorskip("tacit.db")
    from gateway.tests.test_alignment_store import SUMMARY, _pair
    from tacit.db import Store

    env = {"TACIT_HOME": str(tmp_path)}
    store = Store(f"sqlite:///{tmp_path / 'gateway.db'}")
    store.migrate()
    jobs = store.alignment
    try:
        ids = [jobs.create("sft", {"kind": "sft"}, SUMMARY, [_pair(n, ("alice",))]).id for n in range(4)]
        running, cancelling, queued, finished = ids
        for job_id in (running, cancelling, finished):
            assert jobs.claim(job_id, "celery@old") is not None
        jobs.request_cancel(cancelling)  # a running job only gets a flag: its worker is gone, nobody acts on it
        jobs.finish(finished, "succeeded", result={})

        reaped = reap_alignment_jobs(env, "an earlier tacit up stopped")
        assert sorted(reaped) == sorted([running, cancelling])
        failed = jobs.get(running)
        assert failed is not None
        assert failed.status == "failed"
        assert "an earlier tacit up stopped" in failed.error
        statuses = {job_id: getattr(jobs.get(job_id), "status", None) for job_id in ids}
        # The queued one is left alone: its message is in Redis's append-only file.
        assert statuses == {running: "failed", cancelling: "cancelled", queued: "queued", finished: "succeeded"}
        assert [e.kind for e in jobs.events(running)][-1] == "failed"
        assert reap_alignment_jobs(env, "again") == []
    finally:
        store.close()


# -- the whole stack ------------------------------------------------------------------------------------------


class _Up:
    """A `tacit up` process and its output lines (read in a thread)."""

    def __init__(self, home: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TACIT_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tacit_cli.up", "--home", str(home), "--port", str(port), "--model-timeout", "300"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in self.lines if text in line), None)
            if found is not None:
                return found
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} in the output of tacit up:\n{''.join(self.lines)}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=120)
        finally:
            self.reader.join(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def _client(port: int, key: str) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=30)


@pytest.mark.e2e
@pytest.mark.slow
@needs_redis_server
def test_killed_reward_svc_comes_back_while_the_gateway_answers_and_a_restart_after_a_stop_works(
    tmp_path: Path,
) -> None:
    pytest.importorskip("gateway.app")
    import redis

    from tacit.simulate import simulate_session

    home, port = tmp_path / "home", free_port()
    stack = _Up(home, port)
    try:
        key = stack.wait_for("admin key: ", 300).split("admin key: ", 1)[1].strip()
        stack.wait_for("Ctrl-C stops everything", 30)
        assert "demo pages    ON" in "".join(stack.lines)
        described = json.loads((home / "up.json").read_text())
        reward_pid, gateway_pid = described["services"]["reward_svc"]["pid"], described["services"]["gateway"]["pid"]

        # Finding 14: a private home, a Redis that wants its password (not written in up.json).
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        for private in ("gateway.db", "admin.key", "logs/gateway.log", "redis/redis.conf"):
            assert stat.S_IMODE((home / private).stat().st_mode) == 0o600, private
        redis_url = described["redis"]["url"]
        assert ":***@" in redis_url
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(redis_url.replace(":***@", "@")).set("x", "1")

        # Finding 4: reward_svc SIGKILLed; the gateway keeps answering; reward_svc is back in seconds.
        killed_at = time.monotonic()
        os.kill(reward_pid, signal.SIGKILL)
        statuses: dict[int, int] = {}
        with _client(port, key) as client:
            for n in range(60):
                answer = client.post(
                    "/v1/sessions",
                    content=msgspec.json.encode(simulate_session(seed=100 + n, samples=120)),
                    headers={"Content-Type": "application/json"},
                )
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        assert set(statuses) <= {200, 201, 202}, statuses
        stack.wait_for("reward_svc exited with code -9; restarting it in 1 s", 30)
        stack.wait_for("reward_svc is back", 60)
        print(f"reward_svc SIGKILLed: back after {time.monotonic() - killed_at:.1f} s; gateway answers {statuses}")
        described = json.loads((home / "up.json").read_text())
        assert described["services"]["reward_svc"]["pid"] != reward_pid
        assert described["services"]["gateway"]["pid"] == gateway_pid
        assert "reward_svc exited with code -9" in (home / "logs" / "up.log").read_text()
    except BaseException:
        print("".join(stack.lines))  # shown by pytest with the failure
        raise
    finally:
        code = stack.stop()
    assert code == 0, "".join(stack.lines)

    # A restart right after the stop: same port, same key (not printed again), no new key.
    again = _Up(home, port)
    try:
        line = again.wait_for("admin key: ", 300)
        assert key not in "".join(again.lines)
        assert f"admin key: in {home / 'admin.key'}" in line
        again.wait_for("Ctrl-C stops everything", 30)
        with _client(port, key) as client:
            assert client.get("/v1/reward/models").status_code == 200
    except BaseException:
        print("".join(again.lines))
        raise
    finally:
        assert again.stop() == 0, "".join(again.lines)


@pytest.mark.integration
def test_queued_jobs_whose_message_was_lost_are_enqueued_again_once(tmp_path: Path, redis_url: str) -> None:
    pytest.importorskip("tacit.db")
    import redis

    from gateway.tests.test_alignment_store import SUMMARY, _pair
    from tacit.db import Store
    from tacit_cli.up import requeue_lost_jobs

    env = {"TACIT_HOME": str(tmp_path)}
    store = Store(f"sqlite:///{tmp_path / 'gateway.db'}")
    store.migrate()
    jobs = store.alignment
    client = redis.Redis.from_url(redis_url)

    # the align queues only: the session's database also holds its claim (conftest.redis_url)
    def clear() -> None:
        for name in client.scan_iter(match="align*"):
            client.delete(name)

    try:
        clear()
        lost = jobs.create("sft", {"kind": "sft"}, SUMMARY, [_pair(1, ("alice",))]).id
        running = jobs.create("sft", {"kind": "sft"}, SUMMARY, [_pair(2, ("alice",))]).id
        jobs.claim(running, "celery@old")
        assert requeue_lost_jobs(env, redis_url) == [lost]  # what a Redis without persistence lost on restart
        queued = b"".join(bytes(item) for item in client.lrange("align", 0, -1))  # type: ignore[arg-type]
        assert lost.encode() in queued
        assert running.encode() not in queued
        assert requeue_lost_jobs(env, redis_url) == []  # its message is there now: not twice
        assert client.llen("align") == 1
    finally:
        clear()
        client.close()
        store.close()


def test_in_a_shared_database_only_jobs_whose_worker_is_silent_are_reaped(tmp_path: Path) -> None:
    pytest.importorskip("tacit.db")
    from gateway.tests.test_alignment_store import SUMMARY, _pair
    from tacit.db import Store

    shared = f"sqlite:///{tmp_path / 'shared.db'}"  # TACIT_DATABASE_URL: workers on other hosts may use it
    env = {
        "TACIT_HOME": str(tmp_path / "home"),
        "TACIT_DATABASE_URL": shared,
        "TACIT_WORKER_HEARTBEAT_S": "0.1",
        "TACIT_WORKER_STALE_AFTER_S": "0.5",
    }
    store = Store(shared)
    store.migrate()
    jobs = store.alignment
    try:
        job_id = jobs.create("sft", {"kind": "sft"}, SUMMARY, [_pair(1, ("alice",))]).id
        jobs.claim(job_id, "celery@gpu-host")
        assert reap_alignment_jobs(env, "tacit up started") == []  # heard of just now: maybe alive elsewhere
        time.sleep(0.6)
        assert reap_alignment_jobs(env, "tacit up started") == [job_id]
    finally:
        store.close()


def test_the_gateway_reads_data_only_from_the_home_and_the_data_folder(tmp_path: Path) -> None:
    from tacit_cli.up import data_roots_env

    home, data = tmp_path / "home", tmp_path / "ifllm"
    home.mkdir()
    data.mkdir()
    roots = json.loads(data_roots_env(home, data, {})["TACIT_GATEWAY_DATA_ROOTS"])
    assert roots == [str(home / "data"), str(data.resolve())]
    assert (home / "data").is_dir()
    assert data_roots_env(home, None, {"TACIT_GATEWAY_DATA_ROOTS": "[]"}) == {}  # the user's own setting wins
