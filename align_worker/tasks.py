"""The alignment Celery task (thin): claim the job, run the pure training code, record progress and the result.

Delivery is at least once (acks late, requeued when the worker is lost); the job's database row makes it run
at most once to completion: a redelivered job that already finished returns at once, one whose worker died
(silent past `stale_after_s`) is taken over and resumes from its last checkpoint, and one whose worker is
still alive is retried later rather than run twice at the same time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx
import msgspec
from celery import shared_task

from align_worker import metrics
from tacit.db import Store
from tacit.db.alignment import AlignmentJobs, JobBusyError
from tacit.schemas.align import AlignmentJobSpec, AlignmentProgress
from tacit.settings import WorkerSettings, load_settings
from tacit.tasks import TASK_ALIGN

__all__ = ["JobControl", "judge_handoff", "run_alignment"]

logger = logging.getLogger(__name__)


class JobControl:
    """The training code's view of its job row: progress and events written, cancellation read, a heartbeat."""

    def __init__(self, jobs: AlignmentJobs, job_id: str, kind: str, heartbeat_s: float) -> None:
        self.jobs, self.job_id, self.kind = jobs, job_id, kind
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, args=(heartbeat_s,), daemon=True, name="heartbeat")

    def __enter__(self) -> JobControl:
        self._beat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._beat.join(timeout=5)

    def _heartbeat(self, every: float) -> None:
        # Generation and long steps report nothing for a while: the heartbeat tells a redelivery we are alive.
        while not self._stop.wait(every):
            try:
                self.jobs.heartbeat(self.job_id)
            except Exception:  # a missed beat is harmless; the next one will do
                logger.warning("heartbeat of job %s failed", self.job_id, exc_info=True)

    def progress(self, progress: AlignmentProgress) -> None:
        self.jobs.set_progress(self.job_id, progress)
        _metrics("training_step", self.kind, progress.stage, progress.loss, progress.margin, progress.tokens_per_s)

    def event(self, kind: str, data: dict[str, Any]) -> None:
        self.jobs.add_event(self.job_id, kind, data)

    def cancelled(self) -> bool:
        return self.jobs.cancel_requested(self.job_id)


def _metrics(name: str, *args: Any) -> None:
    """Record a worker metric (align_worker.metrics); a metrics failure never fails a job."""
    try:
        getattr(metrics, name)(*args)
    except Exception:
        logger.debug("metric %s failed", name, exc_info=True)


def _judge_prompt(prompt: str) -> str:
    # The judge sees the conversation as the reference sent it ("\n\nHuman: q"), without the open assistant turn.
    return prompt.removesuffix("\n\nAssistant:").strip() or prompt


def judge_handoff(judge_url: str, job_id: str, *, timeout_s: float = 30.0) -> Any:
    """A JudgeFn posting the SFT (A) and aligned (B) answers to judge_svc as an evaluation batch."""

    def judge(prompts: Sequence[str], sft: Sequence[str], aligned: Sequence[str]) -> tuple[str, str]:
        items = [
            {"prompt": _judge_prompt(p), "answer_a": a or "(empty answer)", "answer_b": b or "(empty answer)"}
            for p, a, b in zip(prompts, sft, aligned, strict=True)
        ]
        body = {"items": items, "evaluation": True, "alignment_job_id": job_id, "label": f"alignment {job_id}"}
        url = f"{judge_url.rstrip('/')}/v1/judgments:batch"
        try:
            response = httpx.post(url, json=body, timeout=timeout_s)
        except httpx.TransportError as err:
            raise RuntimeError(f"judge_svc does not answer at {judge_url}: {type(err).__name__}: {err}") from None
        if response.status_code != 202:  # judge_svc's Problem says why (no LLM endpoint configured, say)
            try:
                why = str(response.json().get("detail") or response.text[:300])
            except ValueError:
                why = response.text[:300]
            raise RuntimeError(f"judge_svc answered HTTP {response.status_code}: {why}")
        accepted = response.json()
        return str(accepted["job_id"]), str(accepted.get("status_url", ""))

    return judge


def _torch_threads(settings: WorkerSettings) -> None:
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, settings.torch_threads))


@shared_task(  # type: ignore[untyped-decorator]
    name=TASK_ALIGN, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None
)
def run_alignment(self: Any, job_id: str) -> dict[str, str]:
    """Run or resume alignment job `job_id`; returns its final status (or `skipped`)."""
    from align_worker.training.trainers import Cancelled, quiet_hub, run_job

    quiet_hub()
    settings = load_settings(WorkerSettings, "TACIT_WORKER_")
    store = Store(settings.db_url())
    jobs = store.alignment
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        try:
            claim = jobs.claim(job_id, worker, stale_after_s=settings.stale_after_s)
        except JobBusyError as busy:
            # Another worker is on it (Redis redelivered past the visibility timeout): look again later.
            raise self.retry(countdown=max(5.0, settings.stale_after_s / 2), exc=busy) from None
        if claim is None:
            return {"job_id": job_id, "status": "skipped"}
        _torch_threads(settings)
        spec = msgspec.convert(claim.job.spec, AlignmentJobSpec)  # type: ignore[arg-type]
        kind = claim.job.kind
        _metrics("job_started", kind)
        started = time.monotonic()
        judge = judge_handoff(settings.judge_url, job_id) if settings.judge_url else None
        with JobControl(jobs, job_id, kind, settings.heartbeat_s) as control:
            try:
                result = run_job(spec, jobs.pairs(job_id), settings.jobs_dir() / job_id, control, judge=judge)
            except Cancelled as stage:
                status, fields = "cancelled", {"error": f"cancelled during {stage}"}
            except Exception as err:  # recorded on the job; a retry would fail the same way
                logger.exception("alignment job %s failed", job_id)
                status, fields = "failed", {"error": f"{type(err).__name__}: {err}"}
            else:
                status, fields = "succeeded", {"result": msgspec.to_builtins(result)}
        jobs.finish(job_id, status, **fields)
        _metrics("job_finished", kind, status, time.monotonic() - started)
        return {"job_id": job_id, "status": status}
    finally:
        store.close()
