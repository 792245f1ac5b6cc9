"""feature_svc settings (`TACIT_FEATURES_*`), loaded with the kernel's `load_settings`."""

from __future__ import annotations

import msgspec

from tacit.settings import SettingsError

__all__ = ["FeatureSettings"]


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
