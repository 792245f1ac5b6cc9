"""The gateway's settings (`TACIT_GATEWAY_*`) and its browser collector's (`TACIT_COLLECTOR_*`), loaded with
the kernel's `load_settings`."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from tacit.settings import SettingsError, gateway_db_url

__all__ = ["CollectorSettings", "GatewaySettings"]


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


class CollectorSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Browser collector settings (`TACIT_COLLECTOR_*`)."""

    secret: str = ""
    """HMAC key of browser tokens (>= 32 characters). Empty: a random key per process, so tokens die with a
    restart and are not shared between replicas; set one for several gateway processes."""
    token_ttl_s: int = 900
    """Lifetime of a browser token."""
    max_token_ttl_s: int = 3600
    """The longest lifetime a host backend may ask for."""
    demo: bool = False
    """Serve /demo and let anyone reaching the gateway mint tokens for throwaway demo users (`tacit up` on
    loopback turns it on; keep it off on any address others can reach)."""
    demo_tokens_per_minute: int = 20
    """Demo tokens one client address may mint per minute."""
    sessions_per_minute: int = 30
    """Sessions one browser-token user may post per minute (a reader answers far fewer questions)."""
    demo_sessions_per_minute: int = 60
    """Sessions one client address may post per minute with demo tokens (whatever number of tokens it minted)."""
    demo_answers_per_minute: int = 6
    """Questions one client address may send to the demo's LLM endpoint per minute (each costs two LLM calls)."""
    llm_base_url: str = ""
    """OpenAI-compatible endpoint the demo asks for answers; empty = the bundled sample answers only."""
    llm_api_key: str = ""
    llm_models: list[str] = []
    """Models for the left and right answer (one model: both answers from it, sampled twice)."""
    llm_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.secret and len(self.secret) < 32:
            raise SettingsError("TACIT_COLLECTOR_SECRET must be at least 32 characters")
        if not 0 < self.token_ttl_s <= self.max_token_ttl_s:
            raise SettingsError("token_ttl_s must be > 0 and <= max_token_ttl_s")
        for name in ("demo_tokens_per_minute", "sessions_per_minute", "demo_sessions_per_minute"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be >= 1")
        if self.demo_answers_per_minute < 1:
            raise SettingsError("demo_answers_per_minute must be >= 1")
        if self.llm_base_url and not 1 <= len(self.llm_models) <= 2:
            raise SettingsError("llm_models needs one or two model names when llm_base_url is set")
