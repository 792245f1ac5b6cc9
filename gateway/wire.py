"""Row-to-wire mappers shared by the gateway's routes (database rows in, `tacit.schemas` structs out)."""

from __future__ import annotations

from gateway.db import JobRow
from tacit.schemas.gateway import JobInfo

__all__ = ["job_info"]


def job_info(row: JobRow) -> JobInfo:
    """A background job of the gateway (an IFLLM import, a rescoring) with its progress."""
    return JobInfo(
        id=row.id,
        kind=row.kind,
        status=row.status,  # type: ignore[arg-type]  (the jobs table holds JOB_STATES only)
        stage=row.stage,
        done=row.done,
        total=row.total,
        error=row.error,
        result=row.result,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
