"""Prometheus metrics of the Celery workers: alignment jobs and training progress, every task, the worker itself.

Prefork workers run tasks in child processes, so with `PROMETHEUS_MULTIPROC_DIR` set (an empty directory per
worker; prometheus-client reads the variable when it is imported) every process writes its values to files there
and the worker's `/metrics`, served by the main process, adds them up. Without it, values live in this process
(`--pool solo`, the default of `tacit worker`).

`install(app)` connects the Celery signals: it starts `/metrics` on `TACIT_WORKER_METRICS_PORT` (0 = none) when
the worker starts, exports the known label sets at zero (NaN for loss and margin: nothing trained yet), reports
the queues the worker consumes (`tacit_worker_up`), and counts and times every task. The alignment task calls
`job_started`, `training_step` and `job_finished`.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, start_http_server

from tacit.settings import load_settings

__all__ = [
    "KINDS",
    "STAGES",
    "MetricsSettings",
    "install",
    "job_finished",
    "job_started",
    "start_metrics_server",
    "training_step",
]

#: Alignment job kinds (`tacit.schemas.align`) and the training stages each runs.
KINDS = ("sft", "dpo", "rdpo")
STAGES = {"sft": ("sft",), "dpo": ("sft", "dpo"), "rdpo": ("sft", "rdpo")}
#: Final states of an alignment job.
FINAL_STATES = ("succeeded", "failed", "cancelled")


class MetricsSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Worker metrics (`TACIT_WORKER_METRICS_*`)."""

    port: int = 0
    """Port of the worker's /metrics, served by the main process; 0 = not served."""
    addr: str = "0.0.0.0"
    """Address to bind (all interfaces: a container's metrics port is reached from outside it)."""


class _Prometheus(msgspec.Struct, frozen=True, kw_only=True):
    """prometheus-client's own variable (`PROMETHEUS_MULTIPROC_DIR`), read here through the settings loader."""

    multiproc_dir: str = ""


_REGISTRY = CollectorRegistry()
_JOBS = Counter(
    "tacit_align_jobs", "Alignment jobs finished, by kind and final state", ["kind", "state"], registry=_REGISTRY
)
_RUNNING = Gauge(
    "tacit_align_jobs_running",
    "Alignment jobs running now, by kind",
    ["kind"],
    registry=_REGISTRY,
    multiprocess_mode="livesum",
)
_SECONDS = Histogram(
    "tacit_align_job_seconds",
    "Wall time of an alignment job (this attempt), by kind",
    ["kind"],
    buckets=(60, 300, 600, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 12 * 3600, 24 * 3600),
    registry=_REGISTRY,
)
_LOSS = Gauge(
    "tacit_align_loss",
    "Last logged training loss, by kind and stage",
    ["kind", "stage"],
    registry=_REGISTRY,
    multiprocess_mode="mostrecent",
)
_MARGIN = Gauge(
    "tacit_align_margin",
    "Last logged mean reward margin (chosen minus rejected, beta-scaled), by kind and stage",
    ["kind", "stage"],
    registry=_REGISTRY,
    multiprocess_mode="mostrecent",
)
_TOKENS = Gauge(
    "tacit_align_tokens_per_second",
    "Training throughput of the last logged step, by kind and stage",
    ["kind", "stage"],
    registry=_REGISTRY,
    multiprocess_mode="mostrecent",
)
_STEPS = Counter("tacit_align_steps", "Training steps logged, by kind and stage", ["kind", "stage"], registry=_REGISTRY)
_TASKS = Counter(
    "tacit_worker_tasks", "Celery tasks run, by task name and state", ["task", "state"], registry=_REGISTRY
)
_TASK_SECONDS = Histogram(
    "tacit_worker_task_seconds",
    "Wall time of a Celery task, by task name",
    ["task"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600),
    registry=_REGISTRY,
)
_UP = Gauge(
    "tacit_worker_up",
    "1 per running worker consuming the queue",
    ["queue"],
    registry=_REGISTRY,
    multiprocess_mode="livesum",
)
_started: dict[str, float] = {}


def _multiproc_dir() -> Path | None:
    path = load_settings(_Prometheus, "PROMETHEUS_").multiproc_dir
    return Path(path) if path else None


def job_started(kind: str) -> None:
    """An alignment job of `kind` starts (or resumes) in this process."""
    _RUNNING.labels(kind).inc()


def job_finished(kind: str, state: str, seconds: float) -> None:
    """It ended in `state` (succeeded, failed, cancelled) after `seconds` of this attempt."""
    _RUNNING.labels(kind).dec()
    _JOBS.labels(kind, state).inc()
    _SECONDS.labels(kind).observe(seconds)


def training_step(kind: str, stage: str, loss: float | None, margin: float | None, tokens_per_s: float | None) -> None:
    """A logged optimisation step of `stage`; None leaves the figure as it was."""
    _STEPS.labels(kind, stage).inc()
    for gauge, value in ((_LOSS, loss), (_MARGIN, margin), (_TOKENS, tokens_per_s)):
        if value is not None:
            gauge.labels(kind, stage).set(value)


def _export_known() -> None:
    """Every known label set at its resting value, so dashboards and rules see series before the first job."""
    for kind in KINDS:
        _RUNNING.labels(kind).set(0)
        _SECONDS.labels(kind)
        for state in FINAL_STATES:
            _JOBS.labels(kind, state)
        for stage in STAGES[kind]:
            _STEPS.labels(kind, stage)
            _LOSS.labels(kind, stage).set(math.nan)
            _MARGIN.labels(kind, stage).set(math.nan)
            _TOKENS.labels(kind, stage).set(0)


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics on `port` from a thread of this process: every process's values in multiprocess mode."""
    directory = _multiproc_dir()
    if directory is None:
        registry = _REGISTRY
    else:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(directory))
    start_http_server(port, addr=addr, registry=registry)


# -- Celery signals ----------------------------------------------------------------------------------------


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    directory = _multiproc_dir()
    if directory is not None:  # values of an earlier run of this worker are not this run's
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
    _export_known()
    settings = load_settings(MetricsSettings, "TACIT_WORKER_METRICS_")
    if settings.port:
        start_metrics_server(settings.port, settings.addr)


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    for queue in sender.app.amqp.queues.consume_from or ():
        _UP.labels(queue).set(1)


def _on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    for queue in sender.app.amqp.queues.consume_from or ():
        _UP.labels(queue).set(0)


def _on_process_shutdown(pid: int | None = None, **_: Any) -> None:
    if _multiproc_dir() is not None:  # a child's live gauges leave with it
        multiprocess.mark_process_dead(pid or os.getpid())


def _on_task_prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id is not None:
        _started[task_id] = time.perf_counter()


def _on_task_postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    start = _started.pop(task_id or "", None)
    name = getattr(task, "name", None) or "unknown"
    _TASKS.labels(name, state or "UNKNOWN").inc()
    if start is not None:
        _TASK_SECONDS.labels(name).observe(time.perf_counter() - start)


def install(app: Any) -> None:
    """Connect the worker signals of Celery `app` (idempotent); nothing runs until a worker starts."""
    from celery import signals

    def mine(handler: Any) -> Any:
        def filtered(sender: Any = None, **kwargs: Any) -> None:
            if getattr(sender, "app", app) is app:
                handler(sender=sender, **kwargs)

        return filtered

    for signal, handler, uid in (
        (signals.worker_init, mine(_on_worker_init), "init"),
        (signals.worker_ready, mine(_on_worker_ready), "ready"),
        (signals.worker_shutdown, mine(_on_worker_shutdown), "shutdown"),
        (signals.worker_process_shutdown, _on_process_shutdown, "process_shutdown"),
        (signals.task_prerun, _on_task_prerun, "prerun"),
        (signals.task_postrun, _on_task_postrun, "postrun"),
    ):
        signal.connect(handler, weak=False, dispatch_uid=f"tacit-metrics-{uid}-{id(app)}")
