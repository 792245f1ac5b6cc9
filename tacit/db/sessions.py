"""Stored sessions: the (consent-stripped, compressed) payload and what a listing, a training selection or a
pair builder reads of them. A session and its score are stored in one write (`put_session(result=...)`).
"""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import msgspec
from sqlalchemy import Table, and_, func, or_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import load_only
from sqlmodel import col, select

from tacit.db.features import FeatureNames, checked_values
from tacit.db.models import SessionRow, utcnow
from tacit.db.payload import Prepared, canonical_json, decode_payload, decode_text, prepare, strip_unconsented
from tacit.db.scores import LAZY_PAYLOAD, Scores, apply_reward_score, keep_scores, score_values
from tacit.db.uow import UnitOfWork
from tacit.encoding import b64url, unb64url
from tacit.schemas.features import FeatureVector
from tacit.schemas.reward import Score
from tacit.schemas.session import Session

__all__ = [
    "InvalidCursorError",
    "PayloadPurgedError",
    "SessionConflict",
    "Sessions",
    "TrainingCandidate",
    "decode_cursor",
    "encode_cursor",
    "session_row",
]

_SESSION_TABLE: Table = SessionRow.__table__  # type: ignore[attr-defined]
_SESSION_COLUMNS = tuple(_SESSION_TABLE.columns)


class TrainingCandidate(NamedTuple):
    """What a reward-training selection filters a stored session by."""

    session_id: str
    user_id: str
    received_at: dt.datetime
    label: int | None
    demo: bool


class SessionConflict(Exception):  # noqa: N818 (the name the HTTP layer was promised)
    """A session id that is already stored with different content."""

    code = "conflict"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} is already stored with different content")
        self.session_id = session_id


class InvalidCursorError(ValueError):
    """A pagination cursor that this store did not make."""

    code = "invalid_cursor"


class PayloadPurgedError(LookupError):
    """The raw session was dropped by retention (features and score are still stored)."""

    code = "payload_purged"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"the raw data of session {session_id!r} was purged by retention")
        self.session_id = session_id


def encode_cursor(received_at: dt.datetime, session_id: str) -> str:
    """The keyset cursor after a session ordered by (received_at, session_id): every session listing uses it."""
    at = received_at.astimezone(dt.UTC) if received_at.tzinfo is not None else received_at.replace(tzinfo=dt.UTC)
    return b64url(msgspec.json.encode([at.isoformat(), session_id]))


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    """(received_at, session_id) of a cursor `encode_cursor` made; InvalidCursorError for anything else."""
    try:
        raw = unb64url(cursor)
        at, session_id = msgspec.json.decode(raw, type=tuple[str, str])
        when = dt.datetime.fromisoformat(at)
    except (binascii.Error, msgspec.DecodeError, ValueError):
        raise InvalidCursorError(f"not a cursor this store made: {cursor[:40]!r}") from None
    if when.tzinfo is None or "\x00" in session_id:
        raise InvalidCursorError(f"not a cursor this store made: {cursor[:40]!r}")
    return when, session_id


def session_row(prepared: Prepared, received_at: dt.datetime | None, demo: bool = False) -> SessionRow:
    """A new row for a prepared session (payload, hash and label), received at `received_at` (default now)."""
    session = prepared.session
    return SessionRow(
        demo=demo,
        session_id=session.session_id,
        user_id=session.user_id,
        task_id=session.task_id,
        query_id=session.query_id,
        mode=session.mode,
        turn=session.turn,
        received_at=received_at or utcnow(),
        consent_mouse=session.consent.mouse,
        consent_gaze=session.consent.gaze,
        consent_camera=session.consent.camera,
        label=prepared.label,
        payload=prepared.payload,
        payload_sha256=prepared.sha256,
        samples=prepared.samples,
    )


def _same(row: SessionRow, prepared: Prepared) -> SessionRow:
    if row.payload_sha256 != prepared.sha256:
        raise SessionConflict(row.session_id)
    return row


class Sessions:
    """The `sessions` table: store (idempotently by id and content), read, list and select sessions."""

    def __init__(self, uow: UnitOfWork, names: FeatureNames, scores: Scores) -> None:
        self._uow = uow
        self._names = names
        self._scores = scores
        # Built once, values bound per call: building `.values(row)` each time cost more than the write itself.
        self._put_statement = (
            uow.insert(_SESSION_TABLE)
            .on_conflict_do_nothing(index_elements=["session_id"])
            .returning(_SESSION_TABLE.c.session_id)
        )

    def put_session(
        self,
        session: Session,
        *,
        received_at: dt.datetime | None = None,
        result: tuple[FeatureVector, Score] | None = None,
        demo: bool = False,
    ) -> tuple[SessionRow, bool]:
        """Store a session (unconsented signals stripped); (row, created). Same id and content: the stored row.

        Raises SessionConflict when the id is stored with different content. `received_at` (default now)
        is for imports of past sessions. `result` (its feature vector and score) is written in the same
        transaction, so the ingest hot path takes one write instead of two. `demo`: recorded with a demo token.
        """
        prepared = prepare(session)
        row = session_row(prepared, received_at, demo)
        if result is not None:
            vector, sc = result
            floats = checked_values(vector.names, vector.values)
            self._names.ensure(vector.feature_set, vector.feature_set_version, vector.names)
            row.feature_set, row.feature_set_version, row.features = (
                vector.feature_set,
                vector.feature_set_version,
                floats,
            )
            apply_reward_score(row, sc)
        values = {column.name: getattr(row, column.name) for column in _SESSION_COLUMNS}
        for _ in range(3):
            with self._uow.write() as s:
                # A row back: inserted. None: the id was taken.
                if s.connection().execute(self._put_statement, values).first() is not None:
                    keep_scores(s, self._uow.insert, [score_values(row)])
                    s.commit()
                    return row, True
                # Already stored (on PostgreSQL possibly by a concurrent put that just committed).
                existing = s.get(SessionRow, session.session_id)
            if existing is not None:
                same = _same(existing, prepared)
                if result is not None and same.score_status != "scored":
                    return self._scores.set_result(*result), False
                return same, False
        raise RuntimeError(f"session {session.session_id!r} was deleted while it was being stored")

    def put_sessions(
        self, sessions: Sequence[Session], *, received_at: dt.datetime | None = None
    ) -> list[tuple[SessionRow, bool] | SessionConflict]:
        """Many sessions in one transaction; per item (row, created) or the SessionConflict it raised."""
        prepared = [prepare(session) for session in sessions]
        ids = list({p.session.session_id for p in prepared})
        results: list[tuple[SessionRow, bool] | SessionConflict] = []
        try:
            with self._uow.write() as s:
                known = {
                    row.session_id: row for row in s.exec(select(SessionRow).where(col(SessionRow.session_id).in_(ids)))
                }
                for item in prepared:
                    sid = item.session.session_id
                    if sid in known:
                        try:
                            results.append((_same(known[sid], item), False))
                        except SessionConflict as conflict:
                            results.append(conflict)
                        continue
                    row = session_row(item, received_at)
                    s.add(row)
                    known[sid] = row
                    results.append((row, True))
                s.commit()
        except IntegrityError:
            return [self._put_one(session, received_at) for session in sessions]
        return results

    def first_conflict(self, sessions: Sequence[Session]) -> int | None:
        """The index of the first session whose id is stored (or earlier in `sessions`) with other content."""
        digests = [hashlib.sha256(canonical_json(strip_unconsented(session))).hexdigest() for session in sessions]
        ids = list({session.session_id for session in sessions})
        query = select(SessionRow.session_id, SessionRow.payload_sha256).where(col(SessionRow.session_id).in_(ids))
        with self._uow.read() as s:
            known: dict[str, str] = dict(s.exec(query).all())
        for i, (session, digest) in enumerate(zip(sessions, digests, strict=True)):
            if known.setdefault(session.session_id, digest) != digest:
                return i
        return None

    def _put_one(self, session: Session, received_at: dt.datetime | None) -> tuple[SessionRow, bool] | SessionConflict:
        try:
            return self.put_session(session, received_at=received_at)
        except SessionConflict as conflict:
            return conflict

    def get_session(self, session_id: str) -> SessionRow | None:
        with self._uow.read() as s:
            return s.get(SessionRow, session_id)

    def score_status(self, session_id: str) -> str | None:
        """The score status of a stored session ('pending', 'scored', 'failed'); None when it is not stored.

        One indexed column read, without the payload (the ingest hot path asks it of every session).
        """
        query = select(SessionRow.score_status).where(SessionRow.session_id == session_id)
        with self._uow.connect() as conn:
            status = conn.execute(query).scalar_one_or_none()
            conn.rollback()
        return status

    def find_turn(self, user_id: str, task_id: str, turn: int) -> SessionRow | None:
        """The user's session at `turn` of conversation `task_id` (the latest received if several), with payload."""
        query = (
            select(SessionRow)
            .where(SessionRow.user_id == user_id, SessionRow.task_id == task_id, SessionRow.turn == turn)
            .order_by(col(SessionRow.received_at).desc(), col(SessionRow.session_id).desc())
            .limit(1)
        )
        with self._uow.read() as s:
            return s.exec(query).first()

    def load_payload(self, row: SessionRow) -> Session:
        """The stored (consent-stripped) Session of a row; raises PayloadPurgedError after retention dropped it."""
        if "payload" in row.__dict__:
            payload = row.payload
        else:  # listings do not load the payload
            with self._uow.read() as s:
                payload = s.exec(select(SessionRow.payload).where(SessionRow.session_id == row.session_id)).first()
        if payload is None:
            raise PayloadPurgedError(row.session_id)
        return decode_payload(payload)

    def load_texts(self, rows: Sequence[SessionRow]) -> dict[str, Session]:
        """Sessions of `rows` without trajectories, in one query (rows whose payload was purged are absent)."""
        ids = [row.session_id for row in rows]
        if not ids:
            return {}
        with self._uow.read() as s:
            found = s.exec(
                select(SessionRow.session_id, SessionRow.payload).where(col(SessionRow.session_id).in_(ids))
            ).all()
        return {session_id: decode_text(payload) for session_id, payload in found if payload is not None}

    def sessions_version(self) -> tuple[int, int, str, str]:
        """(sessions, payloads kept, newest received_at, newest scored_at): changes whenever pairs could change
        (an ingest, an erasure, a retention purge, a rescoring)."""
        with self._uow.read() as s:
            count, kept, received, scored = s.exec(
                select(
                    func.count(),
                    func.count(col(SessionRow.payload)),
                    func.max(SessionRow.received_at),
                    func.max(SessionRow.scored_at),
                )
            ).one()
        return int(count), int(kept), str(received), str(scored)

    def list_sessions(
        self,
        *,
        user_id: str | None = None,
        since: dt.datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
        include_demo_sessions: bool = False,
    ) -> tuple[list[SessionRow], str | None]:
        """Sessions oldest first by (received_at, session_id), without payload; and the next page's cursor.

        `since` keeps sessions received at or after it; the cursor is None on the last page. Sessions recorded
        with demo tokens only with `include_demo_sessions` (so training pairs never see them unless asked). Raises
        InvalidCursorError for a cursor this store did not make.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        query = select(SessionRow).options(LAZY_PAYLOAD)
        received, sid = col(SessionRow.received_at), col(SessionRow.session_id)
        if user_id is not None:
            query = query.where(SessionRow.user_id == user_id)
        if since is not None:
            query = query.where(received >= since)
        if not include_demo_sessions:
            query = query.where(col(SessionRow.demo).is_(False))
        if cursor is not None:
            after_at, after_id = decode_cursor(cursor)
            query = query.where(or_(received > after_at, and_(received == after_at, sid > after_id)))
        query = query.order_by(received, sid).limit(limit + 1)
        with self._uow.read() as s:
            rows = list(s.exec(query))
        if len(rows) > limit:
            rows = rows[:limit]
            return rows, encode_cursor(rows[-1].received_at, rows[-1].session_id)
        return rows, None

    def users_with_sessions(self, user_ids: Iterable[str]) -> set[str]:
        """Those of `user_ids` that have at least one stored session."""
        wanted = sorted(set(user_ids))
        found: set[str] = set()
        with self._uow.read() as s:
            for start in range(0, len(wanted), 500):
                query = select(SessionRow.user_id).where(col(SessionRow.user_id).in_(wanted[start : start + 500]))
                found.update(s.exec(query.distinct()).all())
        return found

    def training_candidates(self, mode: str, user_ids: Sequence[str] | None = None) -> list[TrainingCandidate]:
        """Identity, time, label and demo flag of the stored sessions of `mode` (of `user_ids` when given), in
        session-id order: what a training selection filters (no payload, no features)."""
        names = ("session_id", "user_id", "received_at", "label", "demo")
        columns = [getattr(SessionRow, name) for name in names]
        query = select(SessionRow).options(load_only(*columns)).where(SessionRow.mode == mode)
        if user_ids is not None:
            query = query.where(col(SessionRow.user_id).in_(sorted(set(user_ids))))
        with self._uow.read() as s:
            rows = s.exec(query.order_by(col(SessionRow.session_id))).all()
            return [TrainingCandidate(r.session_id, r.user_id, r.received_at, r.label, bool(r.demo)) for r in rows]

    def sessions_by_id(self, session_ids: Sequence[str]) -> list[SessionRow]:
        """The stored rows (with payload) of `session_ids` that exist, in the order given."""
        found: dict[str, SessionRow] = {}
        with self._uow.read() as s:
            for start in range(0, len(session_ids), 500):
                chunk = list(session_ids[start : start + 500])
                found.update(
                    (r.session_id, r) for r in s.exec(select(SessionRow).where(col(SessionRow.session_id).in_(chunk)))
                )
        return [found[sid] for sid in session_ids if sid in found]
