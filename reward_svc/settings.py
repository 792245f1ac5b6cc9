"""reward_svc settings (`TACIT_REWARD_*`), loaded with the kernel's `load_settings`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec

from tacit.settings import SettingsError, data_home

__all__ = ["RewardSettings"]


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
