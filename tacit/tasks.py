"""Celery on the producer side: queue and task names, and the one configuration every Tacit Celery app shares.

Constants and the app factory live in the kernel so that a web process sends a task by name through `producer()`
(queue declarations only, no task code imported) and the worker's app (`tacit_cli.worker`, a composition root)
adds the services' task modules to the same configuration. Task modules register with `celery.shared_task`.

Long jobs need at-least-once delivery without duplicates: acks late (a job is acknowledged when it ends), one job
prefetched at a time, a job whose worker dies is requeued, and Redis's visibility timeout is above the longest job
so a running job is not handed to a second worker. Task bodies are idempotent by job id (see each task).
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from kombu import Exchange, Queue  # type: ignore[attr-defined]

from tacit.settings import WorkerSettings, load_settings

__all__ = [
    "QUEUE_ALIGN",
    "QUEUE_CPU",
    "TASK_ALIGN",
    "TASK_IMPORT_IFLLM",
    "TASK_RESCORE",
    "TASK_TRAIN_REWARD",
    "create_celery",
    "producer",
]

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


def create_celery(settings: WorkerSettings | None = None, *, include: Sequence[str] = ()) -> Celery:
    """A Celery app on the settings' Redis with Tacit's queues, routes and delivery rules; `include`: task modules
    (only the worker's app names them)."""
    settings = settings or load_settings(WorkerSettings, "TACIT_WORKER_")
    celery = Celery("tacit", broker=settings.redis_url, backend=settings.redis_url, include=list(include))
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A job whose worker died is handed back after the visibility timeout; kombu's default sweep for such
        # jobs runs about every 100 s (10 s x a throttle of 10): sweep every few seconds instead (one ZRANGE).
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        # One direct exchange per queue: with the default shared exchange both queues were bound to the key
        # "cpu", so a reward-training message was copied onto the align queue too.
        task_queues=[
            Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]
            for name in (QUEUE_CPU, QUEUE_ALIGN)
        ],
        task_default_queue=QUEUE_CPU,
        task_routes={
            TASK_TRAIN_REWARD: {"queue": QUEUE_CPU},
            TASK_RESCORE: {"queue": QUEUE_CPU},
            TASK_IMPORT_IFLLM: {"queue": QUEUE_CPU},
            TASK_ALIGN: {"queue": QUEUE_ALIGN},
        },
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_track_started=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        worker_concurrency=settings.concurrency,
    )
    return celery


def producer(redis_url: str) -> Celery:
    """The app a web process sends tasks through: the queue declarations only, no task code; it gives up on an
    unreachable broker after one retry (the caller answers 503 or fails the job)."""
    celery = create_celery(WorkerSettings(redis_url=redis_url))
    celery.conf.broker_connection_max_retries = 1
    return celery
