"""The Celery application shared by every Tacit worker (`celery -A align_worker.celery_app worker -Q cpu`).

Long jobs need at-least-once delivery without duplicates: acks late (a job is acknowledged when it ends),
one job prefetched at a time, a job whose worker dies is requeued, and Redis's visibility timeout is
above the longest job so a running job is not handed to a second worker. Task bodies are idempotent by
job id (see each task).
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue  # type: ignore[attr-defined]

import align_worker.metrics
from tacit.settings import WorkerSettings, load_settings
from tacit.tasks import QUEUE_ALIGN, QUEUE_CPU, TASK_ALIGN, TASK_IMPORT_IFLLM, TASK_RESCORE, TASK_TRAIN_REWARD

__all__ = ["app", "create_celery"]


def create_celery(settings: WorkerSettings | None = None) -> Celery:
    settings = settings or load_settings(WorkerSettings, "TACIT_WORKER_")
    celery = Celery(
        "tacit",
        broker=settings.redis_url,
        backend=settings.redis_url,
        include=["reward_svc.tasks", "align_worker.tasks", "gateway.rescoring", "gateway.imports"],
    )
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
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in (QUEUE_CPU, QUEUE_ALIGN)],
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


#: Module-level app for the `celery -A` command line; creating it opens no connection.
app = create_celery()
align_worker.metrics.install(app)  # worker /metrics and task counts (signals only: nothing runs here)
