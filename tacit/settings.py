"""Settings: one frozen struct per service, loaded once from prefixed environment variables.

This is the only module that reads `os.environ`. Every field has a laptop-friendly default; a variable
`TACIT_<SERVICE>_<FIELD>` (upper case) overrides it, decoded with the field's type. Invalid values fail
at start-up with the variable's name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

__all__ = [
    "FeatureSettings",
    "GatewaySettings",
    "RewardSettings",
    "SettingsError",
    "WorkerSettings",
    "data_home",
    "load_settings",
]

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


class FeatureSettings(msgspec.Struct, frozen=True, kw_only=True):
    """feature_svc settings (`TACIT_FEATURES_*`)."""

    host: str = "127.0.0.1"
    port: int = 8101
    max_body_bytes: int = 64 * 1024 * 1024
    """Largest request body accepted (a 4 x 200k-sample session is about 40 MB of JSON)."""
    max_batch: int = 1000
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise SettingsError(f"port {self.port} is not a TCP port")
        if self.max_body_bytes < 1024:
            raise SettingsError("max_body_bytes must be at least 1024")


class RewardSettings(msgspec.Struct, frozen=True, kw_only=True):
    """reward_svc settings (`TACIT_REWARD_*`)."""

    host: str = "127.0.0.1"
    port: int = 8102
    database_url: str = ""
    """SQLAlchemy URL of the model registry; empty = SQLite under the data home."""
    models_dir: str = ""
    """Where artifacts are written; empty = `<data home>/models`."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    max_body_bytes: int = 16 * 1024 * 1024
    max_batch: int = 10_000
    stale_after_s: float = 600.0
    """A running training whose worker has reported nothing (a progress step is its heartbeat) for this long is
    failed as "worker lost" (the worker died or hung); above the longest single step (one fold, the final fit)."""
    reap_interval_s: float = 60.0
    """How often the service looks for such trainings (once at start-up, then at this interval)."""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise SettingsError(f"port {self.port} is not a TCP port")
        if self.stale_after_s <= 0 or self.reap_interval_s <= 0:
            raise SettingsError("stale_after_s and reap_interval_s must be > 0")

    def registry_url(self, environ: Mapping[str, str] | None = None) -> str:
        return self.database_url or f"sqlite:///{data_home(environ) / 'reward.db'}"

    def artifacts(self, environ: Mapping[str, str] | None = None) -> Path:
        return Path(self.models_dir) if self.models_dir else data_home(environ) / "models"


class GatewaySettings(msgspec.Struct, frozen=True, kw_only=True):
    """gateway settings (`TACIT_GATEWAY_*`; the database also from `TACIT_DATABASE_URL`)."""

    host: str = "127.0.0.1"
    port: int = 8100
    database_url: str = ""
    """SQLAlchemy URL; empty = SQLite under the data home (`gateway.db`)."""
    feature_url: str = "http://127.0.0.1:8101"
    reward_url: str = "http://127.0.0.1:8102"
    judge_url: str = "http://127.0.0.1:8103"
    redis_url: str = "redis://127.0.0.1:6379/0"
    feature_set: str = "all"
    """Feature set sessions are vectorised with (the active reward model's set wins when it differs)."""
    timeout_s: float = 5.0
    retries: int = 2
    rescore_interval_s: float = 2.0
    """How often sessions whose scoring is pending are retried."""
    max_body_bytes: int = 64 * 1024 * 1024
    rate_limit_per_s: float = 1000.0
    """Requests a second one API key may make (a token bucket per key); 0 = no limit. Above what one client
    of the benchmarks and load tests sends, so only a runaway client meets it."""
    rate_burst: int = 2000
    """Requests one API key may make at once above the rate (the bucket's size)."""
    cors_origins: list[str] = []
    """Origins (e.g. the collector host page's `https://reader.example`) browsers may call the API from; empty =
    no CORS headers, so browsers refuse every cross-origin call."""
    retention_days: float = 0.0
    """Raw trajectories (session payloads) older than this are deleted, features and scores kept; 0 = keep."""
    retention_interval_s: float = 3600.0
    """How often retention runs (once at start-up, then at this interval)."""
    max_header_bytes: int = 16 * 1024
    """Largest total size of a request's headers (names and values); above it the answer is 431."""
    auth_failures_per_s: float = 1.0
    """Failed authentications one client address, and one key prefix, may make a second after the burst (each
    failure of a well-formed key may cost a ~50 ms scrypt); over it: 429 until the bucket refills. 0 = no limit."""
    auth_failure_burst: int = 100
    """Failed authentications allowed at once per client address and per key prefix."""
    trusted_proxies: list[str] = []
    """Addresses of reverse proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed (the client address
    of rate limits); empty = none: the peer address is the client, whatever the headers say."""
    metrics_key: str = ""
    """When set, `/metrics` needs `Authorization: Bearer <metrics_key>` (Prometheus: `authorization.credentials`);
    empty = open (bind the gateway to a private address then)."""
    data_roots: list[str] = []
    """Folders whose contents requests may name (IFLLM imports, training data); a path elsewhere gets 422 "not an
    allowed data folder" whether it exists or not. Empty = no restriction (a development machine only; `tacit up`
    sets `<home>/data` and its `--data` folder, compose `/data`)."""
    rescore_defer_s: float = 60.0
    """A pending session the reward service refused (409, e.g. no active model for its mode) is retried after this
    long, so it never holds back the others; activating a model retries all of them at once."""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise SettingsError(f"port {self.port} is not a TCP port")
        if self.max_header_bytes < 1024:
            raise SettingsError("max_header_bytes must be at least 1024")
        if self.auth_failures_per_s < 0 or (self.auth_failures_per_s > 0 and self.auth_failure_burst < 1):
            raise SettingsError("auth_failures_per_s must be >= 0 and auth_failure_burst >= 1")
        if self.metrics_key and len(self.metrics_key) < 16:
            raise SettingsError("metrics_key must be at least 16 characters")
        if self.rescore_defer_s <= 0:
            raise SettingsError("rescore_defer_s must be > 0")
        if self.retries < 0 or self.timeout_s <= 0:
            raise SettingsError("retries must be >= 0 and timeout_s > 0")
        if self.rate_limit_per_s < 0 or (self.rate_limit_per_s > 0 and self.rate_burst < 1):
            raise SettingsError("rate_limit_per_s must be >= 0 and rate_burst >= 1")
        if self.retention_days < 0 or self.retention_interval_s <= 0:
            raise SettingsError("retention_days must be >= 0 and retention_interval_s > 0")
        if "*" in self.cors_origins:
            raise SettingsError("cors_origins names origins; '*' would let any page call the API")

    def db_url(self, environ: Mapping[str, str] | None = None) -> str:
        return gateway_db_url(self.database_url, environ)


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
