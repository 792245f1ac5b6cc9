"""Scores per (session, model) and rescoring jobs: the statements the Store and the rescoring worker share.

Every function takes an open database session (`s`) so that it joins the caller's transaction: a session's current
score and its per-model row are written together, and a batch of a rescoring job records its scores, its own status
and the job's progress in one commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, and_, case, func, select, update
from sqlalchemy.orm import Session as DbSession
from sqlmodel import col

from tacit.db.models import JobRow, RescoreBatchRow, SessionRow, SessionScoreRow, utcnow

__all__ = [
    "SCORE_FIELDS",
    "compare_models",
    "finish_batch",
    "keep_scores",
    "missing_in_range",
    "score_values",
    "scores_of",
]

_SCORES: Table = SessionScoreRow.__table__  # type: ignore[attr-defined]
#: What a (session, model) row copies from a scored session row (besides the keys).
SCORE_FIELDS = (
    "user_id",
    "mode",
    "p",
    "p_population",
    "preferred",
    "confidence",
    "quality",
    "abstained",
    "user_labels_used",
    "score_kind",
    "model_demo",
    "scored_at",
)


def score_values(row: SessionRow) -> dict[str, Any] | None:
    """The per-model row of a session row's current score; None when it holds no score."""
    if row.score_status != "scored" or row.model_id is None or row.p is None or row.preferred is None:
        return None
    return {
        "session_id": row.session_id,
        "model_id": row.model_id,
        "user_id": row.user_id,
        "mode": row.mode,
        "p": row.p,
        "p_population": row.p if row.p_population is None else row.p_population,
        "preferred": row.preferred,
        "confidence": row.confidence if row.confidence is not None else max(row.p, 1 - row.p),
        "quality": row.quality,
        "abstained": bool(row.abstained),
        "user_labels_used": row.user_labels_used or 0,
        "score_kind": row.score_kind or "model",
        "model_demo": bool(row.model_demo),
        "scored_at": row.scored_at or utcnow(),
    }


def keep_scores(s: DbSession, insert: Any, values: Iterable[dict[str, Any] | None]) -> int:
    """Insert or replace the (session, model) rows; `insert` is the dialect's insert (it has ON CONFLICT)."""
    rows = [v for v in values if v is not None]
    if not rows:
        return 0
    statement = insert(_SCORES)
    statement = statement.on_conflict_do_update(
        index_elements=["session_id", "model_id"],
        set_={name: statement.excluded[name] for name in SCORE_FIELDS},
    )
    s.connection().execute(statement, rows)
    return len(rows)


def scores_of(s: DbSession, session_id: str) -> list[SessionScoreRow]:
    """Every model's score of one session, oldest first."""
    query = select(SessionScoreRow).where(col(SessionScoreRow.session_id) == session_id)
    return list(s.scalars(query.order_by(col(SessionScoreRow.scored_at), col(SessionScoreRow.model_id))))


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
    scored = select(col(SessionScoreRow.session_id)).where(
        and_(col(SessionScoreRow.model_id) == model_id, col(SessionScoreRow.session_id) == SessionRow.session_id)
    )
    query = select(SessionRow).where(
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


def compare_models(s: DbSession, a: str, b: str) -> dict[str, Any]:
    """Two models on the sessions both scored: agreement, mean |p_a - p_b|, accuracy on the labelled ones."""
    sa, sb = SessionScoreRow.__table__.alias("a"), SessionScoreRow.__table__.alias("b")  # type: ignore[attr-defined]
    sessions: Table = SessionRow.__table__  # type: ignore[attr-defined]
    joined = sa.join(sb, sa.c.session_id == sb.c.session_id).join(sessions, sessions.c.session_id == sa.c.session_id)
    labelled = sessions.c.label.is_not(None)

    def right(t: Any) -> Any:  # the model's choice as a label (1 = right / current)
        return case((t.c.p >= 0.5, 1), else_=0)

    def count(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    query = (
        select(
            func.count(),
            count(right(sa) == right(sb)),
            func.coalesce(func.avg(func.abs(sa.c.p - sb.c.p)), 0.0),
            count(labelled),
            count(and_(labelled, right(sa) == sessions.c.label)),
            count(and_(labelled, right(sb) == sessions.c.label)),
            count(sa.c.score_kind == "out_of_fold"),
            count(sb.c.score_kind == "out_of_fold"),
            count(and_(sa.c.abstained.is_(False), sb.c.abstained.is_(False))),
        )
        .select_from(joined)
        .where(sa.c.model_id == a, sb.c.model_id == b)
    )
    n, agree, mean_gap, n_labelled, right_a, right_b, oof_a, oof_b, both_kept = s.execute(query).one()
    scored_a, scored_b = (
        s.execute(select(func.count()).select_from(_SCORES).where(_SCORES.c.model_id == m)).scalar_one() for m in (a, b)
    )
    return {
        "sessions_both": int(n),
        "agreement": (agree / n) if n else None,
        "agreeing": int(agree),
        "mean_abs_p_difference": float(mean_gap) if n else None,
        "labelled": int(n_labelled),
        "accuracy_a": (right_a / n_labelled) if n_labelled else None,
        "accuracy_b": (right_b / n_labelled) if n_labelled else None,
        "correct_a": int(right_a),
        "correct_b": int(right_b),
        "out_of_fold_a": int(oof_a),
        "out_of_fold_b": int(oof_b),
        "neither_abstained": int(both_kept),
        "scored_a": int(scored_a),
        "scored_b": int(scored_b),
    }


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
        select(func.count())
        .select_from(RescoreBatchRow)
        .where(col(RescoreBatchRow.job_id) == job_id, col(RescoreBatchRow.status).in_(["queued", "running"]))
    ).scalar_one()
    return int(open_batches) == 0
