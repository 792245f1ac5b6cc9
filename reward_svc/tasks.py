"""Celery tasks of the reward service (thin: decode the spec, call the service core, report progress)."""

from __future__ import annotations

from typing import Any

import msgspec

from align_worker.celery_app import app
from reward_svc.registry import Registry
from reward_svc.service import run_training
from tacit.schemas import TrainRewardModel
from tacit.settings import RewardSettings, load_settings
from tacit.tasks import TASK_TRAIN_REWARD

__all__ = ["train_reward_model"]


@app.task(name=TASK_TRAIN_REWARD, bind=True)
def train_reward_model(self: Any, model_id: str, spec: dict[str, Any]) -> dict[str, str]:
    """Train registry entry `model_id`; a redelivered job whose model already succeeded returns at once."""
    settings = load_settings(RewardSettings, "TACIT_REWARD_")
    registry = Registry(settings.registry_url())
    decoded = msgspec.convert(spec, TrainRewardModel)

    def progress(stage: str, done: int, total: int) -> None:
        self.update_state(state="PROGRESS", meta={"stage": stage, "done": done, "total": total})

    row = run_training(registry, model_id, decoded, settings.artifacts(), on_progress=progress)
    return {"id": row.id, "status": row.status, "error": row.error}
