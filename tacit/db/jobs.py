"""Jobs of the gateway's `jobs` table (imports, rescoring, reward-model training records): create, move, cancel.

A worker's transition and a cancel request never overwrite each other: `update_job_if` is one conditional UPDATE.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import update
from sqlmodel import col, select

from tacit.db.models import JOB_STATES, JobRow, RescoreBatchRow, utcnow
from tacit.db.uow import UnitOfWork

__all__ = ["Jobs"]

_JOB_FIELDS = frozenset({"status", "stage", "done", "total", "error", "spec", "result"})


class Jobs:
    """The rows of the `jobs` table; a rescoring job's batches are `RescoreJobs`'."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    def create_job(self, kind: str, spec: dict[str, Any]) -> JobRow:
        row = JobRow(id=uuid.uuid4().hex[:16], kind=kind, spec=dict(spec))
        with self._uow.write() as s:
            s.add(row)
            s.commit()
            return row

    def update_job(self, job_id: str, **fields: Any) -> JobRow:
        """Set status/stage/done/total/error/spec/result of a job; KeyError for an unknown job."""
        unknown = set(fields) - _JOB_FIELDS
        if unknown:
            raise TypeError(f"not job fields: {', '.join(sorted(unknown))}")
        if "status" in fields and fields["status"] not in JOB_STATES:
            raise ValueError(f"job status must be one of {', '.join(JOB_STATES)}")
        with self._uow.write() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise KeyError(job_id)
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = utcnow()
            s.add(row)
            s.commit()
            return row

    def get_job(self, job_id: str) -> JobRow | None:
        with self._uow.read() as s:
            return s.get(JobRow, job_id)

    def list_jobs(self, kind: str | None = None, *, limit: int = 100) -> list[JobRow]:
        """Jobs, newest first."""
        query = select(JobRow).order_by(col(JobRow.created_at).desc(), col(JobRow.id).desc()).limit(limit)
        if kind is not None:
            query = query.where(JobRow.kind == kind)
        with self._uow.read() as s:
            return list(s.exec(query))

    def cancel_job(self, job_id: str) -> JobRow | None:
        """Ask a queued or running job to stop (its remaining batches are skipped); the job, None when unknown."""
        with self._uow.write() as s:
            job = s.get(JobRow, job_id)
            if job is None:
                return None
            if job.status in ("queued", "running"):
                job.status, job.stage, job.updated_at = "cancelled", "cancelled", utcnow()
                s.add(job)
                s.execute(
                    update(RescoreBatchRow)
                    .where(col(RescoreBatchRow.job_id) == job_id, col(RescoreBatchRow.status) == "queued")
                    .values(status="cancelled", updated_at=utcnow())
                )
                s.commit()
                s.refresh(job)
            return job

    def update_job_if(self, job_id: str, statuses: Iterable[str], **fields: Any) -> JobRow | None:
        """`update_job`, but only while the job's status is one of `statuses`: one conditional UPDATE, so that a
        worker's transition and a cancel request never overwrite each other. The job; None (no change) otherwise."""
        unknown = set(fields) - _JOB_FIELDS
        if unknown:
            raise TypeError(f"not job fields: {', '.join(sorted(unknown))}")
        if "status" in fields and fields["status"] not in JOB_STATES:
            raise ValueError(f"job status must be one of {', '.join(JOB_STATES)}")
        with self._uow.write() as s:
            changed = s.exec(
                update(JobRow)
                .where(col(JobRow.id) == job_id, col(JobRow.status).in_(list(statuses)))
                .values(**fields, updated_at=utcnow())
            ).rowcount
            if not changed:
                s.rollback()
                return None
            s.commit()
            return s.get(JobRow, job_id)
