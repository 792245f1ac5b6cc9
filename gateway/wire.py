"""Row-to-wire mappers shared by the gateway's routes (database rows in, `tacit.schemas` structs out)."""

from __future__ import annotations

from typing import Any

from tacit.db import JobRow, Store
from tacit.schemas.gateway import JobInfo, SessionRecord, SessionScore

__all__ = ["abstain_reason", "job_info", "record_score", "score_of", "session_record"]


def job_info(row: JobRow) -> JobInfo:
    """A background job of the gateway (an IFLLM import, a rescoring) with its progress."""
    return JobInfo(
        id=row.id,
        kind=row.kind,
        status=row.status,  # type: ignore[arg-type]  # the jobs table holds JOB_STATES only
        stage=row.stage,
        done=row.done,
        total=row.total,
        error=row.error,
        result=row.result,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def score_of(
    mode: str,
    session_id: str,
    status: str,
    p: float | None,
    preferred: str | None,
    confidence: float | None,
    model_id: str | None,
    demo: bool,
    quality: float | None,
    abstained: bool | None,
    created: bool = True,
    pending_reason: str | None = None,
    p_population: float | None = None,
    user_labels_used: int | None = None,
    abstain_reason: str | None = None,
    score_kind: str | None = None,
) -> SessionScore:
    return SessionScore(
        abstain_reason=abstain_reason,  # type: ignore[arg-type]
        score_kind=score_kind if status == "scored" else None,  # type: ignore[arg-type]
        p_right_population=p_population if mode == "pairwise" else None,
        p_current_population=p_population if mode == "pointwise" else None,
        user_labels_used=user_labels_used,
        session_id=session_id,
        status=status,  # type: ignore[arg-type]
        preferred=preferred,  # type: ignore[arg-type]
        p_right=p if mode == "pairwise" else None,
        p_current=p if mode == "pointwise" else None,
        confidence=confidence,
        model_version=model_id,
        demo_model=demo,
        quality=quality,
        abstained=abstained,
        created=created,
        pending_reason=pending_reason,
    )


def record_score(row: Any, created: bool = True) -> SessionScore:
    return score_of(
        row.mode,
        row.session_id,
        row.score_status,
        row.p,
        row.preferred,
        row.confidence,
        row.model_id,
        bool(row.model_demo),
        row.quality,
        row.abstained,
        created,
        (row.score_error or None) if row.score_status == "pending" else None,
        row.p_population if row.p_population is not None else row.p,
        row.user_labels_used if row.p is not None else None,
        abstain_reason(row),
        row.score_kind,
    )


def abstain_reason(row: Any) -> str | None:
    # derived from what the row stores: the reward service abstains on sessions without samples, or below its gate
    if not row.abstained:
        return None
    return "no_behaviour_samples" if not row.samples else "quality_below_gate"


def session_record(store: Store, row: Any, include_payload: bool) -> SessionRecord:
    return SessionRecord(
        session_id=row.session_id,
        user_id=row.user_id,
        task_id=row.task_id,
        query_id=row.query_id,
        mode=row.mode,
        turn=row.turn,
        received_at=row.received_at,
        consent={"mouse": row.consent_mouse, "gaze": row.consent_gaze, "camera": row.consent_camera},
        label=row.label,
        samples=row.samples or 0,
        feature_set=row.feature_set,
        feature_set_version=row.feature_set_version,
        score=record_score(row, created=False),
        session=store.sessions.load_payload(row) if include_payload and row.payload else None,
        demo=bool(row.demo),
    )


# --- routes -------------------------------------------------------------------------------------------------
