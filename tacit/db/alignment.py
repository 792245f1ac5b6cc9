"""Alignment jobs in the gateway database: the state machine, the pair snapshot and the event log.

The gateway creates a job (with its pairs, in one transaction) and reads it; the alignment worker claims it,
reports progress and events, and finishes it. Every transition is a guarded UPDATE (`WHERE status = ...`), so
two processes can never both move a job on, and a finished job is never claimed again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import delete, func, update
from sqlmodel import col, select

from tacit.db.models import AlignmentJobRow, AlignmentPairRow, AlignmentPairUserRow, JobEventRow, utcnow
from tacit.db.uow import UnitOfWork
from tacit.schemas.align import AlignmentProgress, DataSummary, PreferencePair

__all__ = ["TERMINAL", "AlignmentJobs", "Claim", "InvalidTransitionError", "JobBusyError", "training_set_id"]

_INT64_MAX = 2**63 - 1

TERMINAL = ("succeeded", "failed", "cancelled")
_MAX_ERROR_CHARS = 4000
_PAIR_DECODER = msgspec.json.Decoder(PreferencePair)


def training_set_id(job_id: str) -> str:
    """The id under which a job's users are recorded in `training_sets` (beside reward model ids)."""
    return f"align:{job_id}"


class InvalidTransitionError(ValueError):
    """The job is not in a state that allows the transition (e.g. cancelling a finished job)."""

    def __init__(self, job_id: str, status: str, action: str) -> None:
        super().__init__(f"job {job_id} is {status}: it cannot be {action}")
        self.status = status


class JobBusyError(RuntimeError):
    """The job is running and its worker is alive (it marked itself recently): not to be taken over."""

    def __init__(self, job_id: str, worker: str, silent_s: float) -> None:
        super().__init__(f"job {job_id} is running on {worker} (last heard of {silent_s:.0f} s ago)")
        self.worker = worker


@dataclass(frozen=True)
class Claim:
    """A worker's hold on a job: `resumed` when an earlier attempt had started it (a redelivery)."""

    job: AlignmentJobRow
    resumed: bool


class AlignmentJobs:
    """The alignment-job repository (`Store.alignment`): its transactions go through the Store's unit of work."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    # -- gateway side ----------------------------------------------------------------------------------

    def create(
        self,
        kind: str,
        spec: dict[str, Any],
        summary: DataSummary,
        pairs: Sequence[PreferencePair],
        *,
        created_by: str = "",
    ) -> AlignmentJobRow:
        """Store a queued job with its pair snapshot and its users (for erasure) in one transaction."""
        from tacit.db.models import TrainingSetRow

        job_id = uuid.uuid4().hex[:16]
        row = AlignmentJobRow(
            id=job_id,
            kind=kind,
            spec=dict(spec),
            data=msgspec.to_builtins(summary),
            progress=msgspec.to_builtins(AlignmentProgress(stage="queued")),
            created_by=created_by,
        )
        users = sorted({u for p in pairs for u in p.users})
        with self._uow.write() as s:
            s.add(row)
            s.add_all(
                AlignmentPairRow(job_id=job_id, pair_id=p.pair_id, split=p.split, pair=msgspec.to_builtins(p))
                for p in pairs
            )
            s.add_all(
                AlignmentPairUserRow(job_id=job_id, pair_id=p.pair_id, user_id=u) for p in pairs for u in set(p.users)
            )
            s.add_all(TrainingSetRow(model_id=training_set_id(job_id), user_id=u) for u in users)
            s.add(JobEventRow(job_id=job_id, kind="queued", data={"kind": kind, "pairs": len(pairs)}))
            s.commit()
            return row

    def delete(self, job_id: str) -> None:
        """Remove a job that was never enqueued (with its pairs, users and events)."""
        from tacit.db.models import TrainingSetRow

        with self._uow.write() as s:
            for table, column in (
                (AlignmentPairUserRow, AlignmentPairUserRow.job_id),
                (AlignmentPairRow, AlignmentPairRow.job_id),
                (JobEventRow, JobEventRow.job_id),
                (AlignmentJobRow, AlignmentJobRow.id),
            ):
                s.exec(delete(table).where(col(column) == job_id))
            s.exec(delete(TrainingSetRow).where(col(TrainingSetRow.model_id) == training_set_id(job_id)))
            s.commit()

    def get(self, job_id: str) -> AlignmentJobRow | None:
        with self._uow.read() as s:
            return s.get(AlignmentJobRow, job_id)

    def list_jobs(self, *, status: str | None = None, limit: int = 50) -> list[AlignmentJobRow]:
        """Jobs, newest first."""
        query = (
            select(AlignmentJobRow)
            .order_by(col(AlignmentJobRow.created_at).desc(), col(AlignmentJobRow.id).desc())
            .limit(limit)
        )
        if status is not None:
            query = query.where(AlignmentJobRow.status == status)
        with self._uow.read() as s:
            return list(s.exec(query))

    def counts(self) -> dict[str, int]:
        """Jobs per status."""
        query = select(AlignmentJobRow.status, func.count()).group_by(col(AlignmentJobRow.status))
        with self._uow.read() as s:
            return {status: int(n) for status, n in s.exec(query)}

    def request_cancel(self, job_id: str) -> AlignmentJobRow:
        """A queued job is cancelled at once; a running one is flagged and stops after its current step."""
        with self._uow.write() as s:
            row = s.get(AlignmentJobRow, job_id)
            if row is None:
                raise KeyError(job_id)
            if row.status in TERMINAL:
                raise InvalidTransitionError(job_id, row.status, "cancelled")
            now = utcnow()
            row.cancel_requested = True
            row.updated_at = now
            s.add(JobEventRow(job_id=job_id, kind="cancel_requested", data={}))
            if row.status == "queued":
                row.status = "cancelled"
                row.finished_at = now
                s.add(JobEventRow(job_id=job_id, kind="cancelled", data={"while": "queued"}))
            s.add(row)
            s.commit()
            return row

    def events(self, job_id: str, *, after: int = 0, limit: int = 500) -> list[JobEventRow]:
        after = max(min(after, _INT64_MAX), -1)  # a client's `after` past any id: no events (not an overflow)
        query = (
            select(JobEventRow)
            .where(JobEventRow.job_id == job_id, col(JobEventRow.id) > after)
            .order_by(col(JobEventRow.id))
            .limit(limit)
        )
        with self._uow.read() as s:
            return list(s.exec(query))

    # -- worker side -----------------------------------------------------------------------------------

    def pairs(self, job_id: str) -> list[PreferencePair]:
        query = (
            select(AlignmentPairRow).where(AlignmentPairRow.job_id == job_id).order_by(col(AlignmentPairRow.pair_id))
        )
        with self._uow.read() as s:
            return [msgspec.convert(row.pair, PreferencePair) for row in s.exec(query)]

    def claim(self, job_id: str, worker: str, *, stale_after_s: float | None = None) -> Claim | None:
        """Move a job to running for this worker; None when it is finished or cancelled (nothing to do).

        A job already `running` whose worker has been silent for `stale_after_s` is a redelivery after that
        worker died: it is claimed again and resumes. One heard of more recently raises JobBusyError.
        """
        with self._uow.write() as s:
            row = s.get(AlignmentJobRow, job_id)
            if row is None:
                raise KeyError(job_id)
            if row.status in TERMINAL:
                return None
            now = utcnow()
            if row.cancel_requested:
                row.status, row.finished_at, row.updated_at = "cancelled", now, now
                s.add(row)
                s.add(JobEventRow(job_id=job_id, kind="cancelled", data={"while": "starting"}))
                s.commit()
                return None
            silent = (now - row.updated_at).total_seconds()
            if row.status == "running" and stale_after_s is not None and silent < stale_after_s:
                raise JobBusyError(job_id, row.worker, silent)
            resumed = row.status == "running" or row.attempts > 0
            row.status = "running"
            row.attempts += 1
            row.worker = worker
            row.started_at = row.started_at or now
            row.updated_at = now
            s.add(row)
            kind = "resumed" if resumed else "started"
            s.add(JobEventRow(job_id=job_id, kind=kind, data={"worker": worker, "attempt": row.attempts}))
            s.commit()
            return Claim(job=row, resumed=resumed)

    def set_progress(self, job_id: str, progress: AlignmentProgress, *, log: bool = True) -> None:
        data = msgspec.to_builtins(progress)
        now = utcnow()
        with self._uow.write() as s:
            s.exec(
                update(AlignmentJobRow)
                .where(col(AlignmentJobRow.id) == job_id, col(AlignmentJobRow.status) == "running")
                .values(progress=data, updated_at=now)
            )
            if log:
                s.add(JobEventRow(job_id=job_id, at=now, kind="progress", data=data))
            s.commit()

    def heartbeat(self, job_id: str) -> None:
        """Mark a running job alive (see `claim`'s `stale_after_s`)."""
        with self._uow.write() as s:
            s.exec(
                update(AlignmentJobRow)
                .where(col(AlignmentJobRow.id) == job_id, col(AlignmentJobRow.status) == "running")
                .values(updated_at=utcnow())
            )
            s.commit()

    def add_event(self, job_id: str, kind: str, data: dict[str, Any] | None = None) -> None:
        with self._uow.write() as s:
            s.add(JobEventRow(job_id=job_id, kind=kind, data=dict(data or {})))
            s.commit()

    def cancel_requested(self, job_id: str) -> bool:
        with self._uow.read() as s:
            flag = s.exec(select(AlignmentJobRow.cancel_requested).where(AlignmentJobRow.id == job_id)).first()
        return bool(flag)

    def finish(
        self, job_id: str, status: str, *, result: dict[str, Any] | None = None, error: str = ""
    ) -> AlignmentJobRow | None:
        """running -> succeeded | failed | cancelled; None (and no change) when the job was not running."""
        if status not in TERMINAL:
            raise ValueError(f"not a final state: {status}")
        now = utcnow()
        with self._uow.write() as s:
            changed = s.exec(
                update(AlignmentJobRow)
                .where(col(AlignmentJobRow.id) == job_id, col(AlignmentJobRow.status) == "running")
                .values(
                    status=status,
                    result=result,
                    error=error[:_MAX_ERROR_CHARS],
                    finished_at=now,
                    updated_at=now,
                )
            ).rowcount
            if not changed:
                s.rollback()
                return None
            s.add(JobEventRow(job_id=job_id, at=now, kind=status, data={"error": error[:500]} if error else {}))
            s.commit()
            return s.get(AlignmentJobRow, job_id)
