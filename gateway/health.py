"""Liveness, readiness and the Prometheus endpoint of the gateway."""

from __future__ import annotations

import hmac
import logging
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.access import bearer
from gateway.openapi import documented
from gateway.state import GatewayState
from tacit.schemas.problem import RequestError

__all__ = ["metrics_endpoint", "readyz"]

logger = logging.getLogger(__name__)
JSON = "application/json"
_ENCODER = msgspec.json.Encoder()


@get(
    "/readyz",
    summary="Readiness: database, Redis and each service (503 when one is down)",
    responses=documented(dict[str, Any], 200, 503),
)
async def readyz(state: GatewayState) -> Response[bytes]:
    checks = {
        "database": await anyio.to_thread.run_sync(state.store.ping),
        "redis": await anyio.to_thread.run_sync(_redis_ok, state.settings.redis_url),
        "feature_svc": await state.features.healthy(),
        "reward_svc": await state.reward.healthy(),
    }
    ready = all(checks.values())
    # The judge is optional (scoring and training work without it): reported, never a gateway outage.
    judge = await state.judge.readiness()
    return Response(
        _ENCODER.encode({"ready": ready, "checks": checks, "judge": judge}),
        status_code=200 if ready else 503,
        media_type=JSON,
        headers={} if ready else {"Retry-After": "5"},
    )


def _redis_ok(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics_endpoint(request: Request[Any, Any, Any], state: GatewayState) -> Response[bytes]:
    wanted: str = state.settings.metrics_key
    if wanted and not hmac.compare_digest(bearer(request, "metrics key").encode(), wanted.encode()):
        raise RequestError(401, "unauthorized", "authorization", "wrong metrics key (TACIT_GATEWAY_METRICS_KEY)")
    # Rendering reads the job table and Redis (gateway.metrics): off the event loop.
    return Response(await anyio.to_thread.run_sync(state.metrics.render), media_type=CONTENT_TYPE_LATEST)
