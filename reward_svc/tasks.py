"""Celery tasks of the reward service (thin: decode the spec, call the service core, report progress).

Delivery is at least once (acks late); the registry row makes a run happen once to completion: a redelivered task
whose model succeeded, was cancelled or deleted returns at once, one whose worker was lost (reaped, or running but
silent past `stale_after_s`) takes the run over and trains again, and one whose worker is still heard from is
retried later instead of training twice at the same time.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import msgspec
from celery import shared_task

from reward_svc.registry import ModelBusyError, Registry
from reward_svc.service import run_training
from reward_svc.settings import RewardSettings
from tacit.schemas import TrainRewardModel
from tacit.settings import load_settings
from tacit.tasks import TASK_TRAIN_REWARD

__all__ = ["train_reward_model"]


@shared_task(  # type: ignore[untyped-decorator]
    name=TASK_TRAIN_REWARD, bind=True, max_retries=None
)
def train_reward_model(self: Any, model_id: str, spec: dict[str, Any]) -> dict[str, str]:
    """Train registry entry `model_id`; returns its final status (`deleted` when it is no longer registered)."""
    settings = load_settings(RewardSettings, "TACIT_REWARD_")
    registry = Registry(settings.registry_url())
    decoded = msgspec.convert(spec, TrainRewardModel)
    worker = f"{socket.gethostname()}:{os.getpid()}/{uuid.uuid4().hex[:8]}"

    def progress(stage: str, done: int, total: int) -> None:
        self.update_state(state="PROGRESS", meta={"stage": stage, "done": done, "total": total})

    try:
        row = run_training(
            registry,
            model_id,
            decoded,
            settings.artifacts(),
            on_progress=progress,
            worker=worker,
            stale_after_s=settings.stale_after_s,
        )
    except KeyError:  # deleted before it ran (or while it ran): nothing to do
        return {"id": model_id, "status": "deleted", "error": ""}
    except ModelBusyError as busy:
        # Redelivered while its worker is still heard from: look again once that worker has had time to be reaped.
        raise self.retry(countdown=max(5.0, settings.stale_after_s / 2), exc=busy) from None
    finally:
        registry.close()
    return {"id": row.id, "status": row.status, "error": row.error}
