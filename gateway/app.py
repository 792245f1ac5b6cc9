"""The gateway's factory and wiring: the one public API, assembled from its rooms.

Routes live beside what they do: sessions and users (gateway.sessions), reward models (gateway.reward_routes),
rescoring and model comparison (gateway.model_scores), imports (gateway.imports), judgments (gateway.judgments),
alignment jobs (gateway.alignment), the browser collector (gateway.collector), health (gateway.health). The ingest
use case is gateway.ingest; row-to-wire mappers are gateway.wire. The app is built by the edge kit's
`tacit.edge.service_app` like every service's; the lifespan builds the typed state (gateway.state) at start-up.
Request errors are RequestErrors; `_own_errors` maps the two foreign ones (a stored session's conflict, the
database being unreachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from litestar import Litestar, Request
from litestar.config.cors import CORSConfig
from litestar.middleware import DefineMiddleware
from sqlalchemy.exc import OperationalError

from gateway.access import AuthFailures
from gateway.alignment import EventStreams, alignment_routes
from gateway.clients import FeatureClient, JudgeClient, RewardClient
from gateway.collector import Collector, collector_routes
from gateway.console import console_routes
from gateway.edge import EdgeMiddleware, secure_headers
from gateway.health import metrics_endpoint, readyz
from gateway.imports import import_routes
from gateway.ingest import Pipeline
from gateway.judgments import judgment_routes
from gateway.limits import RateLimiter
from gateway.loops import rescore_loop, retention_loop
from gateway.metrics import Metrics
from gateway.model_scores import model_score_routes
from gateway.openapi import openapi_config
from gateway.reward_routes import reward_routes
from gateway.sessions import session_routes
from gateway.settings import CollectorSettings, GatewaySettings
from gateway.state import GatewayState
from tacit.db import SessionConflict, Store
from tacit.edge import service_app
from tacit.schemas.problem import RequestError
from tacit.serving import serve as run_server
from tacit.settings import load_settings
from tacit.tasks import producer

__all__ = ["create_app", "serve"]

logger = logging.getLogger(__name__)


def _own_errors(exc: Exception) -> RequestError | None:
    """The foreign exceptions the gateway answers as request errors (its own are RequestErrors already)."""
    if isinstance(exc, SessionConflict):
        return RequestError(409, "conflict", "session_id", str(exc))
    if isinstance(exc, OperationalError):
        # The database is unreachable (restarting, failing over): nothing can be stored, so 503 + Retry-After.
        # Logged by type only: the message carries the statement's parameters (session text and trajectories).
        logger.warning("database unavailable: %s", type(exc.orig).__name__)
        return RequestError(503, "unavailable", "$", "the database is unreachable; try again", {"Retry-After": "5"})
    return None


async def _refuse_nul(request: Request[Any, Any, Any]) -> None:
    """400 for a NUL character in a path or query parameter: PostgreSQL cannot even compare text holding one;
    400 for a `Last-Event-ID` that is not an event id (the event streams resume from it)."""
    for name, value in [*request.path_params.items(), *request.query_params.items()]:
        if "\x00" in str(value):
            raise RequestError(400, "invalid", name, "must not contain the NUL character (U+0000)")
    last = request.headers.get("last-event-id")
    if last is not None and last.isdigit() and len(last) > 18:
        raise RequestError(400, "invalid", "Last-Event-ID", "an event id has at most 18 digits")


def create_app(
    settings: GatewaySettings | None = None,
    *,
    store: Store | None = None,
    feature_transport: Any = None,
    reward_transport: Any = None,
) -> Litestar:
    """The gateway. Transports are for tests that put a named double in place of a service."""
    settings = settings or load_settings(GatewaySettings, "TACIT_GATEWAY_")
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own_store = store is None
        state = GatewayState(app.state)  # a typed view of app.state
        state.store = db = store or Store(settings.db_url())
        await anyio.to_thread.run_sync(db.migrate)
        state.settings, state.metrics = settings, metrics
        metrics.watch(db, settings.redis_url)
        state.limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_burst)
        state.auth_failures = AuthFailures(settings.auth_failures_per_s, settings.auth_failure_burst)
        state.collector = Collector(load_settings(CollectorSettings, "TACIT_COLLECTOR_"))
        state.features = FeatureClient(
            settings.feature_url, timeout=settings.timeout_s, retries=settings.retries, transport=feature_transport
        )
        state.reward = RewardClient(
            settings.reward_url, timeout=settings.timeout_s, retries=settings.retries, transport=reward_transport
        )
        # A judgment can take a minute (an LLM answering twice): its own, longer timeout.
        state.judge = JudgeClient(settings.judge_url, timeout=max(settings.timeout_s, 180.0), retries=0)
        state.pipeline = pipeline = Pipeline(db, state.features, state.reward, settings, metrics)
        state.celery = producer(settings.redis_url)  # sends jobs by task name; connects on the first send
        state.alignment_jobs = db.alignment
        state.alignment_streams = EventStreams()
        loops = [asyncio.create_task(rescore_loop(pipeline, settings.rescore_interval_s))]
        if settings.retention_days > 0:
            loops.append(asyncio.create_task(retention_loop(db, settings)))
        try:
            yield
        finally:
            for task in loops:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await state.features.close()
            await state.reward.close()
            await state.judge.close()
            if own_store:
                db.close()

    return service_app(
        "Tacit gateway",
        [
            *session_routes(),
            *reward_routes(),
            *model_score_routes(),
            *import_routes(),
            *judgment_routes(),
            *alignment_routes(),
            *collector_routes(),
            *console_routes(),
            readyz,
        ],
        metrics=metrics,
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
        errors=[_own_errors],
        metrics_endpoint=metrics_endpoint,  # its own: behind a key when one is set, rendered off the event loop
        middleware=[DefineMiddleware(EdgeMiddleware, max_header_bytes=settings.max_header_bytes)],
        openapi_config=openapi_config(),
        before_request=_refuse_nul,
        before_send=[secure_headers],
        # Only the configured origins (the pages that embed the collector); none by default.
        cors_config=(
            CORSConfig(
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type"],
            )
            if settings.cors_origins
            else None
        ),
    )


def serve(settings: GatewaySettings | None = None) -> None:
    settings = settings or load_settings(GatewaySettings, "TACIT_GATEWAY_")
    app = create_app(settings)
    # The modules and app built at start-up live as long as the process: keep the collector from rescanning them.
    gc.freeze()
    # No access log (a line per request on the hot path); httptools and uvloop when installed. X-Forwarded-For is
    # believed from the configured proxies only (uvicorn would otherwise trust it from 127.0.0.1).
    run_server(
        app,
        settings.host,
        settings.port,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or "",
    )
