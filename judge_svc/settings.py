"""judge_svc settings (`TACIT_JUDGE_*`), loaded with the kernel's `load_settings`."""

from __future__ import annotations

from typing import Literal

import msgspec

from tacit.settings import SettingsError, load_settings

__all__ = ["JudgeSettings", "load_judge_settings"]


class JudgeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """judge_svc settings (`TACIT_JUDGE_*`)."""

    backend: Literal["openai_compat", "local"] = "openai_compat"
    base_url: str = "http://127.0.0.1:8000/v1"
    """Any OpenAI-compatible server (vLLM's default address; OpenAI: https://api.openai.com/v1)."""
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

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise SettingsError(f"port {self.port} is not a TCP port")
        if self.concurrency < 1 or self.retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0:
            raise SettingsError("concurrency must be >= 1, retries >= 0 and timeout_s > 0")
        if not self.model:
            raise SettingsError("model must not be empty")
        if self.job_ttl_s < 1 or self.job_lease_s <= 0 or self.max_jobs < 1:
            raise SettingsError("job_ttl_s and max_jobs must be >= 1 and job_lease_s > 0")


def load_judge_settings() -> JudgeSettings:
    return load_settings(JudgeSettings, "TACIT_JUDGE_")
