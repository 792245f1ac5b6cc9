"""The gateway's background loops, started by its lifespan (gateway/app.py): scoring what was stored while a
dependency was down, and the retention of raw trajectories."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

import anyio.to_thread

from gateway.clients import DependencyDownError, DependencyError
from gateway.ingest import Pipeline
from gateway.reward_routes import _apply_active_training_sets
from gateway.settings import GatewaySettings
from tacit.db import Store

__all__ = ["rescore_loop", "retention_loop"]

logger = logging.getLogger("gateway.app")  # the name the loops always logged under

#: How often (in rescoring intervals, at least a second) the rescoring loop looks for a newly active model whose
#: training sessions need their out-of-fold scores.
_ACTIVE_CHECK_INTERVALS = 5


async def rescore_loop(pipeline: Pipeline, interval: float) -> None:
    """Score sessions stored while a dependency was down, once it is back."""
    checked = 0.0
    while True:
        await asyncio.sleep(interval)
        try:
            if time.monotonic() - checked >= max(interval * _ACTIVE_CHECK_INTERVALS, 1.0):
                checked = time.monotonic()
                await _apply_active_training_sets(pipeline)
                try:
                    await pipeline.refresh_population()
                except (DependencyDownError, DependencyError) as err:  # scores keep the last estimate meanwhile
                    logger.warning("adaptation prior not re-estimated: %s", err)
            while await pipeline.rescore_pending() > 0:  # drain a backlog (e.g. after an import) before sleeping
                pass
        except Exception:  # keep the loop alive whatever one pass hits
            logger.exception("rescoring pass failed")


async def retention_loop(store: Store, settings: GatewaySettings) -> None:
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
