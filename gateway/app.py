"""The gateway's factory and wiring: the one public API, assembled from its rooms.

Routes live beside what they do: sessions and users (gateway.sessions), reward models (gateway.reward_routes),
rescoring and model comparison (gateway.model_scores), imports (gateway.imports), judgments (gateway.judgments),
alignment jobs (gateway.alignment), the browser collector (gateway.collector), health (gateway.health). The ingest
use case is gateway.ingest; row-to-wire mappers are gateway.wire. Errors become Problems in `_problem` (tacit.edge
plus the gateway's own errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Litestar, Request
from litestar.config.cors import CORSConfig
from litestar.middleware import DefineMiddleware
from sqlalchemy.exc import OperationalError

from gateway.access import AuthFailures
from gateway.alignment import alignment_routes
from gateway.clients import DependencyDownError, DependencyError, FeatureClient, JudgeClient, RewardClient
from gateway.collector import Collector, collector_routes
from gateway.console import console_routes
from gateway.edge import EdgeMiddleware, secure_headers
from gateway.health import health_routes
from gateway.imports import import_routes
from gateway.ingest import Pipeline
from gateway.judgments import judgment_routes
from gateway.limits import RateLimiter
from gateway.metrics import Metrics
from gateway.model_scores import model_score_routes
from gateway.openapi import openapi_config
from gateway.reward_routes import _apply_active_training_sets, reward_routes
from gateway.sessions import session_routes
from tacit.db import SessionConflict, Store
from tacit.edge import problem_handler
from tacit.schemas.gateway import (
    SessionBatch,
)
from tacit.schemas.problem import RequestError
from tacit.serving import serve as run_server
from tacit.settings import GatewaySettings, load_settings

__all__ = ["create_app", "serve"]

logger = logging.getLogger(__name__)
JSON = "application/json"
_ENCODER = msgspec.json.Encoder()
_BATCH = msgspec.json.Decoder(SessionBatch)


def _own_errors(exc: Exception) -> RequestError | None:
    """The gateway's own errors as Problems (the shared ones are mapped by tacit.edge)."""
    if isinstance(exc, SessionConflict):
        return RequestError(409, "conflict", "session_id", str(exc))
    if isinstance(exc, DependencyError):
        return RequestError(exc.status, exc.problem.code, exc.problem.field, exc.problem.detail)
    if isinstance(exc, DependencyDownError):
        return RequestError(503, "unavailable", "$", str(exc), {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, OperationalError):
        # The database is unreachable (restarting, failing over): nothing can be stored, so 503 + Retry-After.
        # Logged by type only: the message carries the statement's parameters (session text and trajectories).
        logger.warning("database unavailable: %s", type(exc.orig).__name__)
        return RequestError(503, "unavailable", "$", "the database is unreachable; try again", {"Retry-After": "5"})
    return None


_problem = problem_handler(_own_errors)


async def _refuse_nul(request: Request[Any, Any, Any]) -> None:
    """400 for a NUL character in a path or query parameter: PostgreSQL cannot even compare text holding one;
    400 for a `Last-Event-ID` that is not an event id (the event streams resume from it)."""
    for name, value in [*request.path_params.items(), *request.query_params.items()]:
        if "\x00" in str(value):
            raise RequestError(400, "invalid", name, "must not contain the NUL character (U+0000)")
    last = request.headers.get("last-event-id")
    if last is not None and last.isdigit() and len(last) > 18:
        raise RequestError(400, "invalid", "Last-Event-ID", "an event id has at most 18 digits")


# --- the ingest pipeline ------------------------------------------------------------------------------------


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
        app.state.store = db = store or Store(settings.db_url())
        await anyio.to_thread.run_sync(db.migrate)
        app.state.settings = settings
        app.state.metrics = metrics
        metrics.watch(db, settings.redis_url)
        app.state.limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_burst)
        app.state.auth_failures = AuthFailures(settings.auth_failures_per_s, settings.auth_failure_burst)
        app.state.collector = Collector()
        app.state.features = FeatureClient(
            settings.feature_url, timeout=settings.timeout_s, retries=settings.retries, transport=feature_transport
        )
        app.state.reward = RewardClient(
            settings.reward_url, timeout=settings.timeout_s, retries=settings.retries, transport=reward_transport
        )
        # A judgment can take a minute (an LLM answering twice): its own, longer timeout.
        app.state.judge = JudgeClient(settings.judge_url, timeout=max(settings.timeout_s, 180.0), retries=0)
        app.state.pipeline = pipeline = Pipeline(db, app.state.features, app.state.reward, settings, metrics)
        loops = [asyncio.create_task(_rescore_loop(pipeline, settings.rescore_interval_s))]
        if settings.retention_days > 0:
            loops.append(asyncio.create_task(_retention_loop(db, settings)))
        try:
            yield
        finally:
            for task in loops:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await app.state.features.close()
            await app.state.reward.close()
            await app.state.judge.close()
            if own_store:
                db.close()

    return Litestar(
        route_handlers=[
            *session_routes(),
            *reward_routes(),
            *model_score_routes(),
            *import_routes(),
            *judgment_routes(),
            *alignment_routes(),
            *collector_routes(),
            *console_routes(),
            *health_routes(),
        ],
        lifespan=[lifespan],
        before_request=_refuse_nul,
        before_send=[secure_headers],
        middleware=[
            DefineMiddleware(EdgeMiddleware, max_header_bytes=settings.max_header_bytes),
            metrics.http.middleware,
        ],
        exception_handlers={Exception: _problem},
        openapi_config=openapi_config(),
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
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,
    )


#: How often (in rescoring intervals, at least a second) the rescoring loop looks for a newly active model whose
#: training sessions need their out-of-fold scores.
_ACTIVE_CHECK_INTERVALS = 5


async def _rescore_loop(pipeline: Pipeline, interval: float) -> None:
    """Score sessions stored while a dependency was down, once it is back."""
    checked = 0.0
    while True:
        await asyncio.sleep(interval)
        try:
            if time.monotonic() - checked >= max(interval * _ACTIVE_CHECK_INTERVALS, 1.0):
                checked = time.monotonic()
                await _apply_active_training_sets(pipeline)
            while await pipeline.rescore_pending() > 0:  # drain a backlog (e.g. after an import) before sleeping
                pass
        except Exception:  # keep the loop alive whatever one pass hits
            logger.exception("rescoring pass failed")


async def _retention_loop(store: Store, settings: GatewaySettings) -> None:
    """Drop raw trajectories older than `retention_days` (features and scores stay): at start-up, then periodically."""
    older_than = dt.timedelta(days=settings.retention_days)
    while True:
        try:
            purged = await anyio.to_thread.run_sync(store.users.purge_payloads, older_than)
            if purged:
                logger.info("retention: purged the raw data of %d sessions", purged)
        except Exception:  # keep the loop alive whatever one pass hits
            logger.exception("retention pass failed")
        await asyncio.sleep(settings.retention_interval_s)


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
