"""A gateway for tests that exercise it alone: feature_svc and reward_svc unreachable, a judge where the test says."""

from __future__ import annotations

from pathlib import Path

from gateway.settings import GatewaySettings

__all__ = ["UNREACHABLE", "judge_only_settings"]

#: A URL nothing answers on (the discard port): requests fail at once with a refused connection.
UNREACHABLE = "http://127.0.0.1:9"


def judge_only_settings(tmp_path: Path, judge_url: str) -> GatewaySettings:
    """Settings for a gateway on a SQLite file under `tmp_path` whose only reachable dependency is `judge_url`
    (no retries, short timeouts, and a rescoring loop that stays asleep)."""
    return GatewaySettings(
        database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
        feature_url=UNREACHABLE,
        reward_url=UNREACHABLE,
        judge_url=judge_url,
        retries=0,
        timeout_s=1,
        rescore_interval_s=3600,
    )
