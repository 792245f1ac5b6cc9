"""Settings: one frozen struct per service, loaded once from prefixed environment variables.

Each service owns its struct (`feature_svc.settings`, `reward_svc.settings`, `gateway.settings`,
`judge_svc.settings`); this module holds the loader they share and `WorkerSettings`, which the kernel's Celery
configuration (tacit.tasks), the gateway and the workers all read. This is the only module that reads
`os.environ`. Every field has a laptop-friendly default; a variable `TACIT_<SERVICE>_<FIELD>` (upper case)
overrides it, decoded with the field's type. Invalid values fail at start-up with the variable's name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

__all__ = ["SettingsError", "WorkerSettings", "data_home", "gateway_db_url", "load_settings"]

T = TypeVar("T", bound=msgspec.Struct)


class SettingsError(ValueError):
    """An environment variable that does not decode into its setting."""


def data_home(environ: Mapping[str, str] | None = None) -> Path:
    """Where Tacit keeps its files (`TACIT_HOME`, default `~/.local/share/tacit`)."""
    env = os.environ if environ is None else environ
    return Path(env.get("TACIT_HOME") or Path.home() / ".local" / "share" / "tacit")


def gateway_db_url(explicit: str, environ: Mapping[str, str] | None = None) -> str:
    """The gateway's database (also the alignment workers'): `explicit`, else TACIT_DATABASE_URL, else SQLite
    under the data home."""
    env = os.environ if environ is None else environ
    return explicit or env.get("TACIT_DATABASE_URL") or f"sqlite:///{data_home(env) / 'gateway.db'}"


class WorkerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Celery worker settings (`TACIT_WORKER_*`)."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    visibility_timeout_s: int = 12 * 3600
    """Above the longest job, so Redis does not redeliver a job that is still running."""
    concurrency: int = 1
    database_url: str = ""
    """The gateway's database (alignment jobs live there); empty = TACIT_DATABASE_URL, else SQLite under the home."""
    work_dir: str = ""
    """Alignment jobs' checkpoints and models (`<work_dir>/<job id>/`); empty = `<data home>/alignment`."""
    judge_url: str = "http://127.0.0.1:8103"
    """judge_svc, asked to compare SFT and aligned answers after training; empty = no judge hand-off."""
    feature_url: str = "http://127.0.0.1:8101"
    """feature_svc, for rescoring jobs whose model needs another feature set than the one stored with a session."""
    reward_url: str = "http://127.0.0.1:8102"
    """reward_svc, which scores the batches of rescoring jobs."""
    heartbeat_s: float = 15.0
    """How often a running alignment job marks itself alive."""
    stale_after_s: float = 300.0
    """A running job silent for this long belongs to a dead worker: a redelivery may take it over and resume."""
    torch_threads: int = 1
    """torch threads per worker process on a CPU (one per process: processes, not threads, share the cores)."""

    def __post_init__(self) -> None:
        if self.heartbeat_s <= 0 or self.stale_after_s <= self.heartbeat_s:
            raise SettingsError("heartbeat_s must be > 0 and stale_after_s above it")

    def db_url(self, environ: Mapping[str, str] | None = None) -> str:
        return gateway_db_url(self.database_url, environ)

    def jobs_dir(self, environ: Mapping[str, str] | None = None) -> Path:
        return Path(self.work_dir) if self.work_dir else data_home(environ) / "alignment"


def load_settings(cls: type[T], prefix: str, environ: Mapping[str, str] | None = None) -> T:
    """Build `cls` from variables `<prefix><FIELD>`; values are parsed as JSON when they look like it."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for name in cls.__struct_fields__:
        key = f"{prefix}{name.upper()}"
        if key in env:
            value = env[key]
            try:
                raw[name] = msgspec.json.decode(value)
            except msgspec.DecodeError:
                raw[name] = value
    try:
        return msgspec.convert(raw, cls, strict=False)
    except (msgspec.ValidationError, SettingsError) as err:
        raise SettingsError(f"{prefix}*: {err}") from None
