"""Rescoring jobs: the sessions a model has not scored, cut into batches of consecutive session ids.

A job is created by the gateway in one transaction with its batches; each batch re-reads its id range when it runs,
records its scores, its own status and the job's progress in one commit, and the last batch closes the job.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, update
from sqlalchemy import select as sa_select
from sqlalchemy.orm import Session as DbSession
from sqlmodel import col, select

from tacit.db.features import FeatureNames, checked_values
from tacit.db.models import JobRow, RescoreBatchRow, SessionRow, SessionScoreRow, utcnow
from tacit.db.scores import LAZY_PAYLOAD, MAX_ERROR_CHARS, apply_reward_score, keep_scores, score_values
from tacit.db.uow import UnitOfWork
from tacit.schemas.features import FeatureVector
from tacit.schemas.reward import Score

__all__ = ["RescoreJobs", "finish_batch", "missing_in_range"]


def missing_in_range(
    s: DbSession,
    model_id: str,
    mode: str,
    after_id: str,
    last_id: str,
    *,
    user_ids: Sequence[str] | None = None,
    include_demo: bool = False,
) -> list[SessionRow]:
    """Sessions of a batch's id range (after_id, last_id] and of `mode` that `model_id` has not scored yet."""
    scored = sa_select(col(SessionScoreRow.session_id)).where(
        and_(col(SessionScoreRow.model_id) == model_id, col(SessionScoreRow.session_id) == SessionRow.session_id)
    )
    query = sa_select(SessionRow).where(
        col(SessionRow.session_id) > after_id,
        col(SessionRow.session_id) <= last_id,
        col(SessionRow.mode) == mode,
        ~scored.exists(),
    )
    if user_ids:
        query = query.where(col(SessionRow.user_id).in_(list(user_ids)))
    if not include_demo:
        query = query.where(col(SessionRow.demo).is_(False))
    return list(s.scalars(query.order_by(col(SessionRow.session_id))))


def finish_batch(
    s: DbSession, job_id: str, batch: int, *, status: str, scored: int, failed: int, error: str = ""
) -> bool:
    """Close a batch and add what it did to its job's progress; True when it was the job's last open batch."""
    s.execute(
        update(RescoreBatchRow)
        .where(col(RescoreBatchRow.job_id) == job_id, col(RescoreBatchRow.batch) == batch)
        .values(status=status, scored=scored, failed=failed, error=error[:2000], updated_at=utcnow())
    )
    s.execute(
        update(JobRow)
        .where(col(JobRow.id) == job_id)
        .values(done=col(JobRow.done) + scored + failed, updated_at=utcnow())
    )
    open_batches = s.execute(
        sa_select(func.count())
        .select_from(RescoreBatchRow)
        .where(col(RescoreBatchRow.job_id) == job_id, col(RescoreBatchRow.status).in_(["queued", "running"]))
    ).scalar_one()
    return int(open_batches) == 0


class RescoreJobs:
    """Rescoring jobs and their batches (a job's own row is a `jobs` row of kind `rescore`; see `Jobs`)."""

    def __init__(self, uow: UnitOfWork, names: FeatureNames) -> None:
        self._uow = uow
        self._names = names

    def create_rescore_job(
        self,
        spec: dict[str, Any],
        *,
        batch_size: int,
        user_ids: Sequence[str] | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        include_demo: bool = False,
    ) -> tuple[JobRow, list[int]]:
        """A rescoring job of the sessions of `spec["mode"]` that `spec["model_id"]` has not scored, cut into
        batches of consecutive session ids (about `batch_size` each); (job, batch numbers), in one transaction.

        The time filters fix the id ranges here; a batch re-reads its range when it runs, so a session stored
        meanwhile inside a range is scored too, and one scored meanwhile is not scored twice.
        """
        model_id, mode = str(spec["model_id"]), str(spec["mode"])
        scored = select(SessionScoreRow.session_id).where(
            col(SessionScoreRow.model_id) == model_id, col(SessionScoreRow.session_id) == SessionRow.session_id
        )
        query = select(SessionRow.session_id).where(col(SessionRow.mode) == mode, ~scored.exists())
        if user_ids:
            query = query.where(col(SessionRow.user_id).in_(list(user_ids)))
        if since is not None:
            query = query.where(col(SessionRow.received_at) >= since)
        if until is not None:
            query = query.where(col(SessionRow.received_at) < until)
        if not include_demo:
            query = query.where(col(SessionRow.demo).is_(False))
        row = JobRow(id=uuid.uuid4().hex[:16], kind="rescore", spec=dict(spec), stage="queued")
        with self._uow.write() as s:
            ids = list(s.exec(query.order_by(col(SessionRow.session_id))).all())
            batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
            row.total = len(ids)
            row.result = {"batches": len(batches), "scored": 0, "failed": 0}
            if not batches:
                row.status, row.stage = "succeeded", "nothing to score"
            s.add(row)
            after = ""
            for number, chunk in enumerate(batches):
                s.add(
                    RescoreBatchRow(job_id=row.id, batch=number, after_id=after, last_id=chunk[-1], sessions=len(chunk))
                )
                after = chunk[-1]
            s.commit()
            s.refresh(row)
            return row, list(range(len(batches)))

    def rescore_batches(self, job_id: str) -> list[RescoreBatchRow]:
        with self._uow.read() as s:
            query = select(RescoreBatchRow).where(RescoreBatchRow.job_id == job_id)
            return list(s.exec(query.order_by(col(RescoreBatchRow.batch))))

    def start_rescore_batch(self, job_id: str, batch: int) -> tuple[JobRow, RescoreBatchRow] | None:
        """Mark a batch running (one more attempt) and its job too; None when there is nothing to do: the job is
        gone, finished or cancelled, or the batch is already done."""
        with self._uow.write() as s:
            job = s.get(JobRow, job_id)
            part = s.get(RescoreBatchRow, (job_id, batch))
            if job is None or part is None or job.status in ("succeeded", "failed", "cancelled"):
                if part is not None and job is not None and job.status == "cancelled" and part.status == "queued":
                    part.status, part.updated_at = "cancelled", utcnow()
                    s.add(part)
                    s.commit()
                return None
            if part.status not in ("queued", "running"):
                return None
            part.status, part.attempts, part.updated_at = "running", part.attempts + 1, utcnow()
            if job.status == "queued":
                job.status, job.stage = "running", "scoring"
            job.updated_at = utcnow()
            s.add(part)
            s.add(job)
            s.commit()
            s.refresh(job)
            s.refresh(part)
            return job, part

    def missing_scores(self, job: JobRow, part: RescoreBatchRow) -> list[SessionRow]:
        """The sessions of a batch its model has still to score (the payload is not loaded)."""
        spec = job.spec
        with self._uow.read() as s:
            rows = missing_in_range(
                s,
                str(spec["model_id"]),
                str(spec["mode"]),
                part.after_id,
                part.last_id,
                user_ids=spec.get("user_ids") or None,
                include_demo=bool(spec.get("include_demo")),
            )
            for row in rows:
                s.expunge(row)
            return rows

    def record_rescore_batch(
        self,
        job_id: str,
        batch: int,
        scores: Sequence[Score],
        *,
        current: bool,
        failed: dict[str, str],
        vectors: Sequence[FeatureVector] = (),
    ) -> bool:
        """One batch's outcome in one transaction: the (session, model) rows, the sessions' current scores when the
        model is the active one (`current`), newly extracted feature vectors, the batch's status and the job's
        progress; a job whose last batch this was is closed. True when this finished the job."""
        for vector in vectors:
            self._names.ensure(vector.feature_set, vector.feature_set_version, vector.names)
        with self._uow.write() as s:
            part = s.get(RescoreBatchRow, (job_id, batch))
            if part is None or part.status not in ("queued", "running"):
                return False  # another delivery of this batch got there first
            by_id = {sc.session_id: sc for sc in scores}
            rows = (
                list(
                    s.exec(select(SessionRow).options(LAZY_PAYLOAD).where(col(SessionRow.session_id).in_(list(by_id))))
                )
                if by_id
                else []
            )
            values = []
            for row in rows:
                sc = by_id[row.session_id]
                if current:
                    apply_reward_score(row, sc)
                    row.retry_at, row.score_attempts = None, 0
                    s.add(row)
                    values.append(score_values(row))
                else:
                    values.append(
                        {
                            "session_id": row.session_id,
                            "model_id": sc.model_id,
                            "user_id": row.user_id,
                            "mode": row.mode,
                            "p": sc.p,
                            "p_population": sc.p if sc.p_population is None else sc.p_population,
                            "preferred": sc.preferred,
                            "confidence": sc.confidence,
                            "quality": sc.quality,
                            "abstained": sc.abstained,
                            "user_labels_used": sc.user_labels_used,
                            "score_kind": sc.kind,
                            "model_demo": sc.demo,
                            "scored_at": utcnow(),
                        }
                    )
            keep_scores(s, self._uow.insert, values)
            by_vector = {v.session_id: v for v in vectors}
            for row in rows:
                fresh = by_vector.get(row.session_id)
                if fresh is not None and current:
                    row.feature_set, row.feature_set_version = fresh.feature_set, fresh.feature_set_version
                    row.features = checked_values(fresh.names, fresh.values)
                    s.add(row)
            error = "; ".join(f"{sid}: {why}" for sid, why in list(failed.items())[:5])
            last = finish_batch(s, job_id, batch, status="succeeded", scored=len(rows), failed=len(failed), error=error)
            job = s.get(JobRow, job_id)
            if job is not None:
                result = dict(job.result or {})
                result["scored"] = int(result.get("scored", 0)) + len(rows)
                result["failed"] = int(result.get("failed", 0)) + len(failed)
                job.result = result
                if last and job.status == "running":
                    job.status, job.stage = "succeeded", "done"
                s.add(job)
            s.commit()
            return last

    def fail_rescore_batch(self, job_id: str, batch: int, error: str) -> None:
        """A batch that cannot be scored at all (e.g. its model was deleted): it fails, and so does its job."""
        with self._uow.write() as s:
            finish_batch(s, job_id, batch, status="failed", scored=0, failed=0, error=error)
            job = s.get(JobRow, job_id)
            if job is not None and job.status in ("queued", "running"):
                job.status, job.error, job.updated_at = "failed", error[:MAX_ERROR_CHARS], utcnow()
                s.add(job)
            s.commit()
