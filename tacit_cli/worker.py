"""The Celery app of every Tacit worker (`tacit worker --queues cpu`, or `celery -A tacit_cli.worker worker -Q cpu`).

A composition root: it names the services' task modules, which register with `celery.shared_task`, on the shared
configuration of `tacit.tasks.create_celery` (web processes send through `tacit.tasks.producer` and import none
of this).
"""

from __future__ import annotations

import align_worker.metrics
from tacit.tasks import create_celery

__all__ = ["TASK_MODULES", "app"]

#: Every module that defines Tacit's Celery tasks.
TASK_MODULES = ("reward_svc.tasks", "align_worker.tasks", "gateway.rescoring", "gateway.imports")

#: Module-level app for the `celery -A` command line; creating it opens no connection.
app = create_celery(include=TASK_MODULES)
align_worker.metrics.install(app)  # worker /metrics and task counts (signals only: nothing runs here)
