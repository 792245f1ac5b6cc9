"""The gateway's state, typed: what its lifespan (gateway.app) builds at start-up, all of it, and handlers are given
as `state` (litestar injects `app.state` as this class)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.datastructures import State

if TYPE_CHECKING:
    from gateway.access import AuthFailures
    from gateway.alignment import EventStreams
    from gateway.clients import FeatureClient, JudgeClient, RewardClient
    from gateway.collector import Collector
    from gateway.ingest import Pipeline
    from gateway.limits import RateLimiter
    from gateway.metrics import Metrics
    from gateway.settings import GatewaySettings
    from tacit.db import Store
    from tacit.db.alignment import AlignmentJobs

__all__ = ["GatewayState"]


class GatewayState(State):
    """Everything a gateway handler may use; `GatewayState(app.state)` is a typed view of an app's state."""

    settings: GatewaySettings
    store: Store
    metrics: Metrics
    limiter: RateLimiter
    """Requests per API key."""
    auth_failures: AuthFailures
    """Failed authentications per client address and key prefix."""
    collector: Collector
    features: FeatureClient
    reward: RewardClient
    judge: JudgeClient
    pipeline: Pipeline
    """The ingest use case (gateway.ingest)."""
    celery: Any
    """The Celery app jobs are sent through by task name (tacit.tasks.producer: queue declarations, no task code)."""
    alignment_jobs: AlignmentJobs
    alignment_streams: EventStreams
    """Open alignment event streams, counted per key."""
