"""Celery task and queue names: constants in the kernel, so any service can enqueue by name."""

from __future__ import annotations

__all__ = ["QUEUE_ALIGN", "QUEUE_CPU", "TASK_ALIGN", "TASK_IMPORT_IFLLM", "TASK_RESCORE", "TASK_TRAIN_REWARD"]

#: GPU alignment jobs (SFT, DPO, robust DPO).
QUEUE_ALIGN = "align"
#: CPU jobs: reward-model training, imports.
QUEUE_CPU = "cpu"

#: Train a reward model; args: (model_id: str, spec: dict from tacit.schemas.reward.TrainRewardModel).
TASK_TRAIN_REWARD = "tacit.reward.train"
#: Run (or resume) an alignment job; args: (job_id: str). The spec and pairs are read from the gateway database.
TASK_ALIGN = "tacit.align.run"
#: Import an IFLLM folder into the gateway's database; args: (job_id: str). The folder is in the job's spec.
TASK_IMPORT_IFLLM = "tacit.gateway.import_ifllm"
#: Score one batch of a rescoring (backfill) job; args: (job_id: str, batch: int). Idempotent per (session, model).
TASK_RESCORE = "tacit.gateway.rescore"
