"""judge_svc settings (`TACIT_JUDGE_*`), loaded with the kernel's `load_settings`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

from tacit.settings import SettingsError, load_settings

__all__ = ["BASE_URL_SETTING", "JudgeSettings", "load_judge_settings", "redact_url"]

#: The variable that names the judge's LLM endpoint (said by every error about a missing one).
BASE_URL_SETTING = "TACIT_JUDGE_BASE_URL"


def redact_url(url: str) -> str:
    """`url` without user info, query or fragment (where credentials hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class JudgeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """judge_svc settings (`TACIT_JUDGE_*`)."""

    backend: Literal["openai_compat", "local"] = "openai_compat"
    base_url: str = ""
    """Any OpenAI-compatible server (vLLM: http://127.0.0.1:8000/v1; OpenAI: https://api.openai.com/v1); empty =
    no judge configured: judgments answer 503 `not_configured` and `/readyz` says so."""
    model: str = "gpt-4.1-mini"
    """Model id sent to the server; for the local backend, the model's path."""
    api_key: str = ""
    concurrency: int = 4
    """Requests in flight to the judge at once."""
    timeout_s: float = 60.0
    retries: int = 3
    """Extra attempts after a 429, 5xx, timeout or malformed reply (the reference makes 3 attempts in all)."""
    backoff_s: float = 1.0
    """First retry delay; doubled per attempt, jittered, capped at 30 s; a 429's Retry-After wins."""
    temperature: float = 0.0
    """0 keeps verdicts reproducible and cacheable (the reference used 1.0)."""
    max_tokens: int = 512
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Verdict cache and batch job store; empty = no cache, and batch jobs in memory (lost on restart)."""
    cache_ttl_s: int = 30 * 24 * 3600
    job_ttl_s: int = 7 * 24 * 3600
    """How long a batch job (status, verdicts, evaluation) is kept in Redis after its last update."""
    job_lease_s: float = 30.0
    """A running job's record is renewed well within this; a record not renewed for this long belongs to a
    process that died, and its job is reported failed."""
    max_jobs: int = 100
    """Batch jobs kept by the in-memory store (no redis_url): the newest, running ones always."""
    host: str = "127.0.0.1"
    port: int = 8103
    max_body_bytes: int = 4 * 1024 * 1024
    settings_file: str = ""
    """A file of `TACIT_JUDGE_*=value` lines read over the environment at start-up and again on
    `POST /admin/reload` (the LLM endpoint, model, key and sampling change without a restart)."""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise SettingsError(f"port {self.port} is not a TCP port")
        if self.concurrency < 1 or self.retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0:
            raise SettingsError("concurrency must be >= 1, retries >= 0 and timeout_s > 0")
        if not self.model:
            raise SettingsError("model must not be empty")
        if self.base_url and urlsplit(self.base_url).scheme not in ("http", "https"):
            raise SettingsError(f"base_url must be an http(s) URL, got {redact_url(self.base_url)!r}")
        if self.job_ttl_s < 1 or self.job_lease_s <= 0 or self.max_jobs < 1:
            raise SettingsError("job_ttl_s and max_jobs must be >= 1 and job_lease_s > 0")

    @property
    def configured(self) -> bool:
        """A judge is there to ask: a local model, or an OpenAI-compatible endpoint."""
        return self.backend == "local" or bool(self.base_url)

    @property
    def endpoint(self) -> str:
        """Where judgments go, safe to show: the model path (local) or the chat URL without credentials."""
        if self.backend == "local":
            return self.model
        if not self.base_url:
            return ""
        base = redact_url(self.base_url).rstrip("/")
        return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


def _file_values(path: Path) -> dict[str, str]:
    """`KEY=value` lines of a settings file (blank lines and `#` comments skipped, quotes around a value dropped)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise SettingsError(f"TACIT_JUDGE_SETTINGS_FILE {path}: {err.strerror or err}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip().startswith("TACIT_JUDGE_"):
            raise SettingsError(f"{path}:{number}: expected TACIT_JUDGE_<NAME>=value")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def load_judge_settings(environ: Mapping[str, str] | None = None) -> JudgeSettings:
    """The settings from the environment, overlaid by `TACIT_JUDGE_SETTINGS_FILE` when one is named."""
    env = dict(os.environ if environ is None else environ)
    path = env.get("TACIT_JUDGE_SETTINGS_FILE", "")
    if path:
        env.update(_file_values(Path(path).expanduser()))
        env["TACIT_JUDGE_SETTINGS_FILE"] = path
    return load_settings(JudgeSettings, "TACIT_JUDGE_", env)
