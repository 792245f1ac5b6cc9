"""The scores of sessions: each session's current score (on its row) and every model's score of it (`session_scores`).

The module functions take an open database session (`s`) so that they join the caller's transaction: a session's
current score and its per-model row are written together. `Scores` is the repository the ingest and rescoring
paths use.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Table, and_, case, func, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import defer
from sqlmodel import col, select

from tacit.db.features import FeatureNames, checked_values
from tacit.db.models import SessionRow, SessionScoreRow, utcnow
from tacit.db.uow import UnitOfWork
from tacit.schemas.features import FeatureVector
from tacit.schemas.reward import POPULATION_LABELS, Score
from tacit.schemas.session import preferred_side

__all__ = [
    "ADAPTATION_LABELS",
    "LAZY_PAYLOAD",
    "MAX_ERROR_CHARS",
    "MAX_SCORE_ATTEMPTS",
    "SCORE_FIELDS",
    "OutOfFold",
    "Scores",
    "apply_score",
    "compare_models",
    "keep_scores",
    "score_values",
    "scores_of",
]

#: Scoring attempts that failed for the session itself (not for a dependency being down) before giving up.
MAX_SCORE_ATTEMPTS = 5
#: The newest explicit labels of a user that adapt their scores (read on every ingest, so bounded: a user with
#: thousands of labels cost every ingest a scan of all of them, and the load test's throughput fell by half).
ADAPTATION_LABELS = 100
#: The longest error text kept on a session or job row.
MAX_ERROR_CHARS = 2000
# Listings and score updates never need the (large) payload; Sessions.load_payload fetches it on demand.
_PAYLOAD_COLUMN: Any = SessionRow.payload
LAZY_PAYLOAD = defer(_PAYLOAD_COLUMN)


class OutOfFold(NamedTuple):
    """A training session's out-of-fold score from the reward service, and the content it was trained on."""

    session_id: str
    content_hash: str
    p: float
    quality: float | None = None
    abstained: bool = False


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
    query = sa_select(SessionScoreRow).where(col(SessionScoreRow.session_id) == session_id)
    return list(s.scalars(query.order_by(col(SessionScoreRow.scored_at), col(SessionScoreRow.model_id))))


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
        sa_select(
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
        s.execute(sa_select(func.count()).select_from(_SCORES).where(_SCORES.c.model_id == m)).scalar_one()
        for m in (a, b)
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


def apply_score(
    row: SessionRow,
    p: float,
    preferred: str,
    confidence: float,
    quality: float | None,
    abstained: bool,
    model_id: str,
    model_demo: bool,
    p_population: float | None = None,
    user_labels_used: int = 0,
    score_kind: str = "model",
) -> None:
    """A score onto a session row (status 'scored'); not written until the caller's transaction commits."""
    row.p, row.preferred, row.confidence, row.quality = p, preferred, confidence, quality
    row.score_kind = score_kind
    row.abstained, row.model_id, row.model_demo = abstained, model_id, model_demo
    # scores from before adaptation existed (or without one) are population scores
    row.p_population = p if p_population is None else p_population
    row.user_labels_used = user_labels_used
    row.score_status, row.score_error, row.scored_at = "scored", "", utcnow()


def apply_reward_score(row: SessionRow, sc: Score) -> None:
    """Every field of a reward-service Score onto its row."""
    apply_score(
        row,
        sc.p,
        sc.preferred,
        sc.confidence,
        sc.quality,
        sc.abstained,
        sc.model_id,
        sc.demo,
        sc.p_population,
        sc.user_labels_used,
        sc.kind,
    )


class Scores:
    """Features and scores of stored sessions: the ingest's result, failed and deferred attempts, every model's
    score of a session, and the label history that adapts a user's scores."""

    def __init__(self, uow: UnitOfWork, names: FeatureNames, *, max_score_attempts: int = MAX_SCORE_ATTEMPTS) -> None:
        self._uow = uow
        self._names = names
        self.max_score_attempts = max_score_attempts

    # -- features --------------------------------------------------------------------------------------

    def feature_names(self, feature_set: str, version: str) -> list[str] | None:
        """The names of a stored (feature set, version), in value order."""
        return self._names.stored(feature_set, version)

    def features_of(self, row: SessionRow) -> FeatureVector | None:
        """The stored feature vector of a row, with its names; None before features were set."""
        return self._names.vector_of(row)

    def set_features(
        self, session_id: str, feature_set: str, version: str, names: Sequence[str], values: Sequence[float]
    ) -> SessionRow:
        """Store a session's feature vector (names once per set and version). KeyError for an unknown session."""
        floats = checked_values(names, values)
        self._names.ensure(feature_set, version, names)
        with self._uow.write() as s:
            row = s.get(SessionRow, session_id, options=[LAZY_PAYLOAD])
            if row is None:
                raise KeyError(session_id)
            row.feature_set, row.feature_set_version, row.features = feature_set, version, floats
            s.add(row)
            s.commit()
            return row

    def set_feature_vectors(self, vectors: Iterable[FeatureVector]) -> int:
        """`set_features` for each vector (e.g. a feature service batch answer); sessions updated."""
        count = 0
        for vector in vectors:
            self.set_features(
                vector.session_id, vector.feature_set, vector.feature_set_version, vector.names, vector.values
            )
            count += 1
        return count

    # -- a session's current score ---------------------------------------------------------------------

    def set_score(
        self,
        session_id: str,
        *,
        p: float,
        preferred: str,
        confidence: float,
        quality: float | None,
        abstained: bool,
        model_id: str,
        model_demo: bool,
    ) -> SessionRow:
        """Record a session's score (status 'scored'). KeyError for an unknown session."""
        with self._uow.write() as s:
            row = s.get(SessionRow, session_id, options=[LAZY_PAYLOAD])
            if row is None:
                raise KeyError(session_id)
            apply_score(row, p, preferred, confidence, quality, abstained, model_id, model_demo)
            s.add(row)
            keep_scores(s, self._uow.insert, [score_values(row)])
            s.commit()
            return row

    def set_scores(self, scores: Iterable[Score]) -> int:
        """Record many scores (a reward service answer) in one transaction; sessions updated (unknown ids skipped)."""
        by_id = {score.session_id: score for score in scores}
        if not by_id:
            return 0
        with self._uow.write() as s:
            query = select(SessionRow).options(LAZY_PAYLOAD)
            rows = list(s.exec(query.where(col(SessionRow.session_id).in_(list(by_id)))))
            for row in rows:
                sc = by_id[row.session_id]
                apply_reward_score(row, sc)
                s.add(row)
            keep_scores(s, self._uow.insert, [score_values(row) for row in rows])
            s.commit()
        return len(rows)

    def set_result(self, vector: FeatureVector, score: Score) -> SessionRow:
        """`set_features` and `set_score` in one transaction (the ingest hot path). KeyError for an unknown session."""
        if vector.session_id != score.session_id:
            raise ValueError(f"vector of {vector.session_id!r} but score of {score.session_id!r}")
        floats = checked_values(vector.names, vector.values)
        self._names.ensure(vector.feature_set, vector.feature_set_version, vector.names)
        with self._uow.write() as s:
            row = s.get(SessionRow, vector.session_id, options=[LAZY_PAYLOAD])
            if row is None:
                raise KeyError(vector.session_id)
            row.feature_set, row.feature_set_version, row.features = (
                vector.feature_set,
                vector.feature_set_version,
                floats,
            )
            sc = score
            apply_reward_score(row, sc)
            s.add(row)
            keep_scores(s, self._uow.insert, [score_values(row)])
            s.commit()
            return row

    def mark_score_failed(self, session_id: str, error: str) -> SessionRow:
        """Count a failed scoring attempt; after `max_score_attempts` the status becomes 'failed'.

        Only for failures caused by the session itself: while a dependency is down, leave it pending.
        A session that is no longer pending is returned unchanged. KeyError for an unknown session.
        """
        with self._uow.write() as s:
            row = s.get(SessionRow, session_id, options=[LAZY_PAYLOAD])
            if row is None:
                raise KeyError(session_id)
            if row.score_status == "pending":
                row.score_attempts += 1
                row.score_error = error[:MAX_ERROR_CHARS]
                if row.score_attempts >= self.max_score_attempts:
                    row.score_status = "failed"
                s.add(row)
                s.commit()
            return row

    def defer_score(self, session_id: str, reason: str, *, retry_in: dt.timedelta | None = None) -> SessionRow:
        """Note why a session is still unscored without counting an attempt; `retry_in`: `pending()` leaves it
        out that long (a refusal that would repeat), None: retried at the next pass (a dependency is down)."""
        with self._uow.write() as s:
            row = s.get(SessionRow, session_id, options=[LAZY_PAYLOAD])
            if row is None:
                raise KeyError(session_id)
            if row.score_status == "pending":
                row.score_error = reason[:MAX_ERROR_CHARS]
                row.retry_at = None if retry_in is None else utcnow() + retry_in
                s.add(row)
                s.commit()
            return row

    def retry_deferred(self) -> int:
        """Make every deferred pending session due now (e.g. a model was activated); rows changed."""
        statement = (
            update(SessionRow)
            .where(col(SessionRow.score_status) == "pending", col(SessionRow.retry_at).is_not(None))
            .values(retry_at=None)
        )
        with self._uow.write() as s:
            count = s.exec(statement).rowcount
            s.commit()
        return int(count)

    def pending(self, limit: int = 100) -> list[SessionRow]:
        """Sessions waiting for a score and due for a try, oldest first (without payload)."""
        due = or_(col(SessionRow.retry_at).is_(None), col(SessionRow.retry_at) <= utcnow())
        query = (
            select(SessionRow)
            .options(LAZY_PAYLOAD)
            .where(SessionRow.score_status == "pending", due)
            .order_by(col(SessionRow.received_at), col(SessionRow.session_id))
            .limit(limit)
        )
        with self._uow.read() as s:
            return list(s.exec(query))

    def apply_out_of_fold(self, model_id: str, model_demo: bool, members: Iterable[OutOfFold]) -> int:
        """Score a model's training sessions with their out-of-fold probabilities (kind `out_of_fold`), in one
        transaction; only sessions still stored with the content the model saw (matched by id alone when the model
        recorded no content hash: trained from an IFLLM folder, whose questions are imported as `ifllm-<id>`).
        Sessions updated."""
        by_id = {m.session_id: m for m in members}
        if not by_id:
            return 0
        updated = 0
        with self._uow.write() as s:
            ids = list(by_id)
            for start in range(0, len(ids), 500):
                query = select(SessionRow).options(LAZY_PAYLOAD)
                for row in s.exec(query.where(col(SessionRow.session_id).in_(ids[start : start + 500]))):
                    member = by_id[row.session_id]
                    if member.content_hash and row.payload_sha256 != member.content_hash:
                        continue  # erased and stored again with other content: not the session trained on
                    preferred = preferred_side(row.mode, member.p)
                    apply_score(
                        row,
                        member.p,
                        preferred,
                        max(member.p, 1 - member.p),
                        member.quality,
                        member.abstained,
                        model_id,
                        model_demo,
                        member.p,
                        0,
                        "out_of_fold",
                    )
                    row.retry_at, row.score_attempts = None, 0
                    s.add(row)
                    keep_scores(s, self._uow.insert, [score_values(row)])
                    updated += 1
            s.commit()
        return updated

    # -- adaptation state and every model's score ------------------------------------------------------

    def label_history(
        self, user_id: str, mode: str, *, exclude: str | None = None, limit: int = ADAPTATION_LABELS
    ) -> list[tuple[float, int, str, str]]:
        """The user's explicit labels of `mode` with the population probability and model of each: per-user state.

        (p_population, label, model_id, task_id) of scored sessions with a label, newest first, at most `limit`
        (the task, because labels of one task are correlated evidence: reward_svc.model.adapt). This is
        the adaptation state: it lives in the sessions themselves, so erasing the user erases it, a new label
        updates it with the ingest that brings it, and rescoring with another model re-versions it. `exclude`:
        the session being scored (its own label must never inform its own score).
        """
        query = (
            sa_select(  # five columns: past sqlmodel's typed overloads of select
                col(SessionRow.p_population),
                col(SessionRow.p),
                col(SessionRow.label),
                col(SessionRow.model_id),
                col(SessionRow.task_id),
            )
            .where(
                col(SessionRow.user_id) == user_id,
                col(SessionRow.mode) == mode,
                col(SessionRow.label).is_not(None),
                col(SessionRow.score_status) == "scored",
                col(SessionRow.session_id) != (exclude or ""),
            )
            .order_by(col(SessionRow.received_at).desc())
            .limit(limit)
        )
        with self._uow.read() as s:
            rows = s.execute(query).all()
        history: list[tuple[float, int, str, str]] = []
        for p_pop, p, label, model_id, task_id in rows:
            population = p_pop if p_pop is not None else p  # scores from before adaptation are population ones
            if model_id is not None and population is not None and label is not None:
                history.append((float(population), int(label), str(model_id), str(task_id)))
        return history

    def scores_of(self, session_id: str) -> list[SessionScoreRow]:
        """Every model's score of a session, oldest first."""
        with self._uow.read() as s:
            return scores_of(s, session_id)

    def compare_models(self, a: str, b: str) -> dict[str, Any]:
        """Two models on the sessions both scored (see `compare_models` in this module)."""
        with self._uow.read() as s:
            return compare_models(s, a, b)

    def _population_query(self, model_id: str, mode: str) -> Any:
        return (
            sa_select(  # five columns: past sqlmodel's typed overloads of select
                col(SessionScoreRow.user_id),
                col(SessionScoreRow.p_population),
                col(SessionRow.label),
                col(SessionRow.received_at),
                col(SessionRow.task_id),
            )
            .join(SessionRow, col(SessionRow.session_id) == col(SessionScoreRow.session_id))
            .where(
                col(SessionScoreRow.model_id) == model_id,
                col(SessionScoreRow.mode) == mode,
                col(SessionRow.label).is_not(None),
            )
        )

    def population_labels(
        self, model_id: str, mode: str, limit: int = POPULATION_LABELS
    ) -> list[tuple[str, float, int, str]]:
        """(user id, population probability by `model_id`, label, task id) of the newest labelled sessions that
        model scored.

        The people the model scores, for re-estimating its adaptation prior over them (reward_svc.model.adapt's
        empirical Bayes step). Erasing a user removes their rows, so the next estimate goes without them.
        """
        query = self._population_query(model_id, mode).order_by(col(SessionRow.received_at).desc()).limit(limit)
        with self._uow.read() as s:
            return [
                (str(user), float(p), int(label or 0), str(task)) for user, p, label, _, task in s.execute(query).all()
            ]

    def population_signature(self, model_id: str, mode: str) -> tuple[int, str]:
        """(count, newest arrival) of those labels: it changes when a label arrives, is rescored or is erased."""
        inner = self._population_query(model_id, mode).subquery()
        query = sa_select(func.count(), func.max(inner.c.received_at))
        with self._uow.read() as s:
            count, newest = s.execute(query).one()
        return int(count or 0), "" if newest is None else str(newest)

    def model_label_history(
        self, user_id: str, mode: str, model_id: str, limit: int = 100
    ) -> list[tuple[float, int, str]]:
        """(population probability by `model_id`, label, task id) of the user's newest labelled sessions that model
        scored."""
        query = (
            select(SessionScoreRow.p_population, SessionRow.label, SessionRow.task_id)
            .join(SessionRow, col(SessionRow.session_id) == col(SessionScoreRow.session_id))
            .where(
                col(SessionScoreRow.user_id) == user_id,
                col(SessionScoreRow.model_id) == model_id,
                col(SessionScoreRow.mode) == mode,
                col(SessionRow.label).is_not(None),
            )
            .order_by(col(SessionRow.received_at).desc())
            .limit(limit)
        )
        with self._uow.read() as s:
            return [(float(p), int(label or 0), str(task)) for p, label, task in s.exec(query).all()]
