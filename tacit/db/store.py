"""The gateway's storage: sessions with their payload, features and score; API keys; erasures; jobs.

Every method is synchronous and runs one short transaction, so the HTTP layer calls them from a thread
pool. SQLite (the default) runs in WAL mode with transactions begun explicitly (`BEGIN IMMEDIATE` for
writes, so two writers queue on the busy timeout instead of failing on a stale snapshot); PostgreSQL
runs at its default READ COMMITTED isolation.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import logging
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import Engine, Table, and_, bindparam, create_engine, delete, event, func, or_, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer, load_only
from sqlalchemy.pool import StaticPool
from sqlmodel import Session as DbSession
from sqlmodel import col, select

from tacit.db.migrations import current_version, migrate
from tacit.db.models import (
    JOB_STATES,
    AlignmentJobRow,
    AlignmentPairRow,
    AlignmentPairUserRow,
    Erasure,
    FeatureNamesRow,
    JobRow,
    KeyRow,
    RescoreBatchRow,
    SessionRow,
    SessionScoreRow,
    TrainingSetRow,
    utcnow,
)
from tacit.db.payload import Prepared, canonical_json, decode_payload, decode_text, prepare, strip_unconsented
from tacit.db.scores import compare_models, finish_batch, keep_scores, missing_in_range, score_values, scores_of
from tacit.schemas.features import FeatureVector
from tacit.schemas.reward import Score
from tacit.schemas.session import Session, preferred_side

__all__ = [
    "MAX_SCORE_ATTEMPTS",
    "USER_TABLES",
    "InvalidCursorError",
    "OutOfFold",
    "PayloadPurgedError",
    "SessionConflict",
    "Store",
    "TrainingCandidate",
]


class TrainingCandidate(NamedTuple):
    """What a reward-training selection filters a stored session by."""

    session_id: str
    user_id: str
    received_at: dt.datetime
    label: int | None
    demo: bool


class OutOfFold(NamedTuple):
    """A training session's out-of-fold score from the reward service, and the content it was trained on."""

    session_id: str
    content_hash: str
    p: float
    quality: float | None = None
    abstained: bool = False


#: Scoring attempts that failed for the session itself (not for a dependency being down) before giving up.
MAX_SCORE_ATTEMPTS = 5
#: Tables that hold rows keyed by a raw user id; erasure empties them for the user.
USER_TABLES = ("sessions", "session_scores", "training_sets", "alignment_pairs", "alignment_pair_users")
_JOB_FIELDS = frozenset({"status", "stage", "done", "total", "error", "spec", "result"})
_MAX_ERROR_CHARS = 2000
# Listings and score updates never need the (large) payload; load_payload fetches it on demand.
_PAYLOAD_COLUMN: Any = SessionRow.payload
_LAZY_PAYLOAD = defer(_PAYLOAD_COLUMN)
logger = logging.getLogger(__name__)
_SESSION_TABLE: Table = SessionRow.__table__  # type: ignore[attr-defined]
_SESSION_COLUMNS = tuple(_SESSION_TABLE.columns)


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


def _encode_cursor(row: SessionRow) -> str:
    raw = msgspec.json.encode([row.received_at.isoformat(), row.session_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, session_id = msgspec.json.decode(raw, type=tuple[str, str])
        when = dt.datetime.fromisoformat(at)
    except (binascii.Error, msgspec.DecodeError, ValueError):
        raise InvalidCursorError(f"invalid cursor {cursor[:40]!r}") from None
    if when.tzinfo is None or "\x00" in session_id:
        raise InvalidCursorError(f"invalid cursor {cursor[:40]!r}")
    return when, session_id


def _is_memory(url: str) -> bool:
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def _use_wal(cursor: sqlite3.Cursor, timeout_s: float = 30.0) -> None:
    # WAL is a property of the file: set once, then only read. Switching needs an exclusive lock and SQLite
    # does not wait for it, so a connection racing the first one retries instead of failing.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    memory = _is_memory(url)
    if not memory and parsed.database is not None:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        # One shared connection for an in-memory database (each connection would otherwise see its own).
        **({"poolclass": StaticPool} if memory else {}),
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from pysqlite (it would not BEGIN before DDL), as SQLAlchemy documents.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        # Deleted rows (erasure, retention) are overwritten with zeros, not left in free pages of the file.
        cursor.execute("PRAGMA secure_delete=ON")
        if not memory:
            _use_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('tacit_begin', '')}".strip())

    return engine


#: The newest explicit labels of a user that adapt their scores (read on every ingest, so bounded: a user with
#: thousands of labels cost every ingest a scan of all of them, and the load test's throughput fell by half).
ADAPTATION_LABELS = 100


class Store:
    """Access to the gateway database; `migrate()` once at start-up, `close()` at shutdown."""

    def __init__(self, url: str, *, max_score_attempts: int = MAX_SCORE_ATTEMPTS) -> None:
        if max_score_attempts < 1:
            raise ValueError("max_score_attempts must be >= 1")
        self.url = url
        self.max_score_attempts = max_score_attempts
        backend = make_url(url).get_backend_name()
        if backend == "sqlite":
            self.engine = _sqlite_engine(url)
            self._insert: Any = sqlite_insert
        elif backend == "postgresql":
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
            self._insert = postgresql_insert
        else:
            raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql+psycopg://")
        self._writer = self.engine.execution_options(tacit_begin="IMMEDIATE")
        # Built once, values bound per call: building `.values(row)` each time cost more than the write itself.
        self._put_statement = (
            self._insert(_SESSION_TABLE)
            .on_conflict_do_nothing(index_elements=["session_id"])
            .returning(_SESSION_TABLE.c.session_id)
        )
        keys: Table = KeyRow.__table__  # type: ignore[attr-defined]
        self._key_by_id = keys.select().where(keys.c.id == bindparam("key_id"))
        self._names: dict[tuple[str, str], tuple[str, ...]] = {}
        self._names_lock = threading.Lock()
        # An in-memory SQLite database is one connection: its transactions must take turns.
        self._serial: AbstractContextManager[Any] = threading.RLock() if _is_memory(url) else nullcontext()
        # A SQLite file has one writer at a time. Writers of this process queue on a lock (woken at once when it
        # is released) rather than in SQLite's busy handler, which polls with sleeps of up to 100 ms; readers
        # never wait (WAL). Other processes still meet at BEGIN IMMEDIATE and the busy timeout.
        self._writers: AbstractContextManager[Any] = (
            threading.RLock() if backend == "sqlite" and not _is_memory(url) else nullcontext()
        )

    # -- lifecycle -------------------------------------------------------------------------------------

    def migrate(self, target: int | None = None) -> list[int]:
        """Bring the schema to the latest version (or `target`); returns the versions applied (none if current)."""
        return migrate(self._writer, target=target)

    def schema_version(self) -> int:
        return current_version(self.engine)

    def close(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    @contextmanager
    def _read(self) -> Iterator[DbSession]:
        with self._serial, DbSession(self.engine, expire_on_commit=False) as s:
            yield s

    @contextmanager
    def _write(self) -> Iterator[DbSession]:
        with self._serial, self._writers, DbSession(self._writer, expire_on_commit=False) as s:
            yield s

    # -- sessions --------------------------------------------------------------------------------------

    def _new_row(self, prepared: Prepared, received_at: dt.datetime | None, demo: bool = False) -> SessionRow:
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

    @staticmethod
    def _same(row: SessionRow, prepared: Prepared) -> SessionRow:
        if row.payload_sha256 != prepared.sha256:
            raise SessionConflict(row.session_id)
        return row

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
        row = self._new_row(prepared, received_at, demo)
        if result is not None:
            vector, sc = result
            floats = self._checked_values(vector.names, vector.values)
            self._ensure_names(vector.feature_set, vector.feature_set_version, vector.names)
            row.feature_set, row.feature_set_version, row.features = (
                vector.feature_set,
                vector.feature_set_version,
                floats,
            )
            self._apply(row, sc)
        values = {column.name: getattr(row, column.name) for column in _SESSION_COLUMNS}
        for _ in range(3):
            with self._write() as s:
                # A row back: inserted. None: the id was taken.
                if s.connection().execute(self._put_statement, values).first() is not None:
                    keep_scores(s, self._insert, [score_values(row)])
                    s.commit()
                    return row, True
                # Already stored (on PostgreSQL possibly by a concurrent put that just committed).
                existing = s.get(SessionRow, session.session_id)
            if existing is not None:
                same = self._same(existing, prepared)
                if result is not None and same.score_status != "scored":
                    return self.set_result(*result), False
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
            with self._write() as s:
                known = {
                    row.session_id: row for row in s.exec(select(SessionRow).where(col(SessionRow.session_id).in_(ids)))
                }
                for item in prepared:
                    sid = item.session.session_id
                    if sid in known:
                        try:
                            results.append((self._same(known[sid], item), False))
                        except SessionConflict as conflict:
                            results.append(conflict)
                        continue
                    row = self._new_row(item, received_at)
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
        with self._read() as s:
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
        with self._read() as s:
            return s.get(SessionRow, session_id)

    def score_status(self, session_id: str) -> str | None:
        """The score status of a stored session ('pending', 'scored', 'failed'); None when it is not stored.

        One indexed column read, without the payload (the ingest hot path asks it of every session).
        """
        query = select(SessionRow.score_status).where(SessionRow.session_id == session_id)
        with self._serial, self.engine.connect() as conn:
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
        with self._read() as s:
            return s.exec(query).first()

    def label_history(
        self, user_id: str, mode: str, *, exclude: str | None = None, limit: int = ADAPTATION_LABELS
    ) -> list[tuple[float, int, str]]:
        """The user's explicit labels of `mode` with the population probability and model of each: per-user state.

        (p_population, label, model_id) of scored sessions with a label, newest first, at most `limit`. This is
        the adaptation state: it lives in the sessions themselves, so erasing the user erases it, a new label
        updates it with the ingest that brings it, and rescoring with another model re-versions it. `exclude`:
        the session being scored (its own label must never inform its own score).
        """
        query = (
            select(SessionRow.p_population, SessionRow.p, SessionRow.label, SessionRow.model_id)
            .where(
                SessionRow.user_id == user_id,
                SessionRow.mode == mode,
                col(SessionRow.label).is_not(None),
                SessionRow.score_status == "scored",
                SessionRow.session_id != (exclude or ""),
            )
            .order_by(col(SessionRow.received_at).desc())
            .limit(limit)
        )
        with self._read() as s:
            rows = s.exec(query).all()
        history: list[tuple[float, int, str]] = []
        for p_pop, p, label, model_id in rows:
            population = p_pop if p_pop is not None else p  # scores from before adaptation are population ones
            if model_id is not None and population is not None and label is not None:
                history.append((float(population), int(label), str(model_id)))
        return history

    def load_payload(self, row: SessionRow) -> Session:
        """The stored (consent-stripped) Session of a row; raises PayloadPurgedError after retention dropped it."""
        if "payload" in row.__dict__:
            payload = row.payload
        else:  # listings do not load the payload
            with self._read() as s:
                payload = s.exec(select(SessionRow.payload).where(SessionRow.session_id == row.session_id)).first()
        if payload is None:
            raise PayloadPurgedError(row.session_id)
        return decode_payload(payload)

    def load_texts(self, rows: Sequence[SessionRow]) -> dict[str, Session]:
        """Sessions of `rows` without trajectories, in one query (rows whose payload was purged are absent)."""
        ids = [row.session_id for row in rows]
        if not ids:
            return {}
        with self._read() as s:
            found = s.exec(
                select(SessionRow.session_id, SessionRow.payload).where(col(SessionRow.session_id).in_(ids))
            ).all()
        return {session_id: decode_text(payload) for session_id, payload in found if payload is not None}

    def sessions_version(self) -> tuple[int, int, str, str]:
        """(sessions, payloads kept, newest received_at, newest scored_at): changes whenever pairs could change
        (an ingest, an erasure, a retention purge, a rescoring)."""
        with self._read() as s:
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
        query = select(SessionRow).options(_LAZY_PAYLOAD)
        received, sid = col(SessionRow.received_at), col(SessionRow.session_id)
        if user_id is not None:
            query = query.where(SessionRow.user_id == user_id)
        if since is not None:
            query = query.where(received >= since)
        if not include_demo_sessions:
            query = query.where(col(SessionRow.demo).is_(False))
        if cursor is not None:
            after_at, after_id = _decode_cursor(cursor)
            query = query.where(or_(received > after_at, and_(received == after_at, sid > after_id)))
        query = query.order_by(received, sid).limit(limit + 1)
        with self._read() as s:
            rows = list(s.exec(query))
        if len(rows) > limit:
            rows = rows[:limit]
            return rows, _encode_cursor(rows[-1])
        return rows, None

    # -- features and scores ---------------------------------------------------------------------------

    def _ensure_names(self, feature_set: str, version: str, names: Sequence[str]) -> None:
        key, wanted = (feature_set, version), tuple(names)
        with self._names_lock:
            cached = self._names.get(key)
        if cached is None:
            row: FeatureNamesRow | None = None
            for _ in range(3):  # a concurrent first writer may win the insert; then compare with it
                try:
                    with self._write() as s:
                        row = s.get(FeatureNamesRow, key)
                        if row is None:
                            row = FeatureNamesRow(feature_set=feature_set, version=version, names=list(wanted))
                            s.add(row)
                            s.commit()
                    break
                except IntegrityError:
                    row = None
            if row is None:
                raise RuntimeError(f"could not store the names of feature set {feature_set!r} version {version!r}")
            cached = tuple(row.names)
            with self._names_lock:
                self._names[key] = cached
        if cached != wanted:
            raise ValueError(f"feature set {feature_set!r} version {version!r} is stored with other names")

    def feature_names(self, feature_set: str, version: str) -> list[str] | None:
        """The names of a stored (feature set, version), in value order."""
        with self._read() as s:
            row = s.get(FeatureNamesRow, (feature_set, version))
            return None if row is None else list(row.names)

    @staticmethod
    def _checked_values(names: Sequence[str], values: Sequence[float]) -> list[float]:
        if len(names) != len(values):
            raise ValueError(f"{len(names)} names but {len(values)} values")
        floats = [float(v) for v in values]
        if not all(math.isfinite(v) for v in floats):
            raise ValueError("feature values must be finite")
        return floats

    def set_features(
        self, session_id: str, feature_set: str, version: str, names: Sequence[str], values: Sequence[float]
    ) -> SessionRow:
        """Store a session's feature vector (names once per set and version). KeyError for an unknown session."""
        floats = self._checked_values(names, values)
        self._ensure_names(feature_set, version, names)
        with self._write() as s:
            row = s.get(SessionRow, session_id, options=[_LAZY_PAYLOAD])
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

    def features_of(self, row: SessionRow) -> FeatureVector | None:
        """The stored feature vector of a row, with its names; None before features were set."""
        if row.features is None or row.feature_set is None or row.feature_set_version is None:
            return None
        names = self._names.get((row.feature_set, row.feature_set_version))
        if names is None:
            stored = self.feature_names(row.feature_set, row.feature_set_version)
            if stored is None:
                return None
            names = tuple(stored)
            with self._names_lock:
                self._names[(row.feature_set, row.feature_set_version)] = names
        return FeatureVector(
            session_id=row.session_id,
            feature_set=row.feature_set,
            feature_set_version=row.feature_set_version,
            names=list(names),
            values=list(row.features),
            samples=row.samples,
        )

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
        with self._write() as s:
            row = s.get(SessionRow, session_id, options=[_LAZY_PAYLOAD])
            if row is None:
                raise KeyError(session_id)
            self._apply_score(row, p, preferred, confidence, quality, abstained, model_id, model_demo)
            s.add(row)
            keep_scores(s, self._insert, [score_values(row)])
            s.commit()
            return row

    @staticmethod
    def _apply_score(
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
        row.p, row.preferred, row.confidence, row.quality = p, preferred, confidence, quality
        row.score_kind = score_kind
        row.abstained, row.model_id, row.model_demo = abstained, model_id, model_demo
        # scores from before adaptation existed (or without one) are population scores
        row.p_population = p if p_population is None else p_population
        row.user_labels_used = user_labels_used
        row.score_status, row.score_error, row.scored_at = "scored", "", utcnow()

    @classmethod
    def _apply(cls, row: SessionRow, sc: Score) -> None:
        """Every field of a reward-service Score onto its row."""
        cls._apply_score(
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

    def set_scores(self, scores: Iterable[Score]) -> int:
        """Record many scores (a reward service answer) in one transaction; sessions updated (unknown ids skipped)."""
        by_id = {score.session_id: score for score in scores}
        if not by_id:
            return 0
        with self._write() as s:
            query = select(SessionRow).options(_LAZY_PAYLOAD)
            rows = list(s.exec(query.where(col(SessionRow.session_id).in_(list(by_id)))))
            for row in rows:
                sc = by_id[row.session_id]
                self._apply(row, sc)
                s.add(row)
            keep_scores(s, self._insert, [score_values(row) for row in rows])
            s.commit()
        return len(rows)

    def set_result(self, vector: FeatureVector, score: Score) -> SessionRow:
        """`set_features` and `set_score` in one transaction (the ingest hot path). KeyError for an unknown session."""
        if vector.session_id != score.session_id:
            raise ValueError(f"vector of {vector.session_id!r} but score of {score.session_id!r}")
        floats = self._checked_values(vector.names, vector.values)
        self._ensure_names(vector.feature_set, vector.feature_set_version, vector.names)
        with self._write() as s:
            row = s.get(SessionRow, vector.session_id, options=[_LAZY_PAYLOAD])
            if row is None:
                raise KeyError(vector.session_id)
            row.feature_set, row.feature_set_version, row.features = (
                vector.feature_set,
                vector.feature_set_version,
                floats,
            )
            sc = score
            self._apply(row, sc)
            s.add(row)
            keep_scores(s, self._insert, [score_values(row)])
            s.commit()
            return row

    def mark_score_failed(self, session_id: str, error: str) -> SessionRow:
        """Count a failed scoring attempt; after `max_score_attempts` the status becomes 'failed'.

        Only for failures caused by the session itself: while a dependency is down, leave it pending.
        A session that is no longer pending is returned unchanged. KeyError for an unknown session.
        """
        with self._write() as s:
            row = s.get(SessionRow, session_id, options=[_LAZY_PAYLOAD])
            if row is None:
                raise KeyError(session_id)
            if row.score_status == "pending":
                row.score_attempts += 1
                row.score_error = error[:_MAX_ERROR_CHARS]
                if row.score_attempts >= self.max_score_attempts:
                    row.score_status = "failed"
                s.add(row)
                s.commit()
            return row

    def defer_score(self, session_id: str, reason: str, *, retry_in: dt.timedelta | None = None) -> SessionRow:
        """Note why a session is still unscored without counting an attempt; `retry_in`: `pending()` leaves it
        out that long (a refusal that would repeat), None: retried at the next pass (a dependency is down)."""
        with self._write() as s:
            row = s.get(SessionRow, session_id, options=[_LAZY_PAYLOAD])
            if row is None:
                raise KeyError(session_id)
            if row.score_status == "pending":
                row.score_error = reason[:_MAX_ERROR_CHARS]
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
        with self._write() as s:
            count = s.exec(statement).rowcount
            s.commit()
        return int(count)

    def pending(self, limit: int = 100) -> list[SessionRow]:
        """Sessions waiting for a score and due for a try, oldest first (without payload)."""
        due = or_(col(SessionRow.retry_at).is_(None), col(SessionRow.retry_at) <= utcnow())
        query = (
            select(SessionRow)
            .options(_LAZY_PAYLOAD)
            .where(SessionRow.score_status == "pending", due)
            .order_by(col(SessionRow.received_at), col(SessionRow.session_id))
            .limit(limit)
        )
        with self._read() as s:
            return list(s.exec(query))

    # -- reward training from stored sessions --------------------------------------------------------

    def users_with_sessions(self, user_ids: Iterable[str]) -> set[str]:
        """Those of `user_ids` that have at least one stored session."""
        wanted = sorted(set(user_ids))
        found: set[str] = set()
        with self._read() as s:
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
        with self._read() as s:
            rows = s.exec(query.order_by(col(SessionRow.session_id))).all()
            return [TrainingCandidate(r.session_id, r.user_id, r.received_at, r.label, bool(r.demo)) for r in rows]

    def sessions_by_id(self, session_ids: Sequence[str]) -> list[SessionRow]:
        """The stored rows (with payload) of `session_ids` that exist, in the order given."""
        found: dict[str, SessionRow] = {}
        with self._read() as s:
            for start in range(0, len(session_ids), 500):
                chunk = list(session_ids[start : start + 500])
                found.update(
                    (r.session_id, r) for r in s.exec(select(SessionRow).where(col(SessionRow.session_id).in_(chunk)))
                )
        return [found[sid] for sid in session_ids if sid in found]

    def apply_out_of_fold(self, model_id: str, model_demo: bool, members: Iterable[OutOfFold]) -> int:
        """Score a model's training sessions with their out-of-fold probabilities (kind `out_of_fold`), in one
        transaction; only sessions still stored with the content the model saw (matched by id alone when the model
        recorded no content hash: trained from an IFLLM folder, whose questions are imported as `ifllm-<id>`).
        Sessions updated."""
        by_id = {m.session_id: m for m in members}
        if not by_id:
            return 0
        updated = 0
        with self._write() as s:
            ids = list(by_id)
            for start in range(0, len(ids), 500):
                query = select(SessionRow).options(_LAZY_PAYLOAD)
                for row in s.exec(query.where(col(SessionRow.session_id).in_(ids[start : start + 500]))):
                    member = by_id[row.session_id]
                    if member.content_hash and row.payload_sha256 != member.content_hash:
                        continue  # erased and stored again with other content: not the session trained on
                    preferred = preferred_side(row.mode, member.p)
                    self._apply_score(
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
                    keep_scores(s, self._insert, [score_values(row)])
                    updated += 1
            s.commit()
        return updated

    # -- users: training sets and erasure --------------------------------------------------------------

    def record_training_set(self, model_id: str, user_ids: Iterable[str]) -> int:
        """Remember the users a reward model was trained on (added to any recorded before); rows added."""
        wanted = set(user_ids)
        with self._write() as s:
            query = select(TrainingSetRow.user_id).where(TrainingSetRow.model_id == model_id)
            known: set[str] = set(s.exec(query).all())
            new = sorted(wanted - known)
            s.add_all(TrainingSetRow(model_id=model_id, user_id=user) for user in new)
            s.commit()
        return len(new)

    def count_user_rows(self, user_id: str) -> dict[str, int]:
        """Rows holding this user id, per table of USER_TABLES."""
        links = select(AlignmentPairUserRow.job_id, AlignmentPairUserRow.pair_id).where(
            AlignmentPairUserRow.user_id == user_id
        )
        pair_key = tuple_(col(AlignmentPairRow.job_id), col(AlignmentPairRow.pair_id))
        with self._read() as s:
            return {
                "sessions": s.exec(select(func.count()).where(SessionRow.user_id == user_id)).one(),
                "session_scores": s.exec(select(func.count()).where(SessionScoreRow.user_id == user_id)).one(),
                "training_sets": s.exec(select(func.count()).where(TrainingSetRow.user_id == user_id)).one(),
                "alignment_pairs": s.exec(select(func.count()).where(pair_key.in_(links))).one(),
                "alignment_pair_users": s.exec(
                    select(func.count()).where(AlignmentPairUserRow.user_id == user_id)
                ).one(),
            }

    def erase_user(
        self, user_id: str, *, also_models: Iterable[str] = (), extra_counts: dict[str, int] | None = None
    ) -> Erasure:
        """Delete every row of the user in one transaction and record it (hashed id, counts, affected models).

        `also_models`, `extra_counts`: what the reward service's part of the erasure found (recorded with it).
        """
        with self._write() as s:
            recorded = set(s.exec(select(TrainingSetRow.model_id).where(TrainingSetRow.user_id == user_id)))
            models = sorted(recorded | set(also_models))
            deleted = {
                "sessions": s.exec(delete(SessionRow).where(col(SessionRow.user_id) == user_id)).rowcount,
                "session_scores": s.exec(
                    delete(SessionScoreRow).where(col(SessionScoreRow.user_id) == user_id)
                ).rowcount,
                "training_sets": s.exec(delete(TrainingSetRow).where(col(TrainingSetRow.user_id) == user_id)).rowcount,
            }
            # Alignment-job snapshots: the pairs built from the user's sessions (before their user links go).
            links = select(AlignmentPairUserRow.job_id, AlignmentPairUserRow.pair_id).where(
                AlignmentPairUserRow.user_id == user_id
            )
            pair_key = tuple_(col(AlignmentPairRow.job_id), col(AlignmentPairRow.pair_id))
            # The user's prompts also sit in the evaluation answers of the jobs trained on them: redact those files
            # before the pairs (the only record of which prompts were theirs) are deleted.
            prompts: dict[str, set[str]] = {}
            for job_id, pair in s.exec(
                select(AlignmentPairRow.job_id, AlignmentPairRow.pair).where(pair_key.in_(links))
            ).all():
                prompts.setdefault(job_id, set()).add(str(pair.get("prompt", "")))
            deleted["evaluation_answers"] = self._redact_answers(s, prompts)
            deleted["alignment_pairs"] = s.exec(delete(AlignmentPairRow).where(pair_key.in_(links))).rowcount
            # Every link of those pairs goes with them: a pair merged from several users' sessions is gone for all.
            link_key = tuple_(col(AlignmentPairUserRow.job_id), col(AlignmentPairUserRow.pair_id))
            deleted["alignment_pair_users"] = s.exec(delete(AlignmentPairUserRow).where(link_key.in_(links))).rowcount
            deleted.update(extra_counts or {})
            record = Erasure(
                id=uuid.uuid4().hex,
                user_hash=hashlib.sha256(user_id.encode()).hexdigest(),
                rows_deleted=deleted,
                models_affected=models,
            )
            s.add(record)
            s.commit()
        self._checkpoint()
        return record

    @staticmethod
    def _redact_answers(s: DbSession, prompts: dict[str, set[str]]) -> int:
        """Rewrite each job's evaluation/answers.jsonl without the lines of these prompts; the lines removed.

        A file written by a worker on another host is not reachable here; it is left and the count says so (0).
        The rewrite goes through a temporary file and an atomic rename, so a reader never sees half a file.
        """
        removed = 0
        if not prompts:
            return 0
        rows = s.exec(
            select(AlignmentJobRow.id, AlignmentJobRow.result).where(col(AlignmentJobRow.id).in_(list(prompts)))
        )
        for job_id, result in rows.all():
            path_text = ((result or {}).get("evaluation") or {}).get("answers_path")
            if not path_text:
                continue
            path = Path(path_text)
            if not path.is_file():
                continue
            kept: list[bytes] = []
            with path.open("rb") as f:
                for line in f:
                    try:
                        prompt = msgspec.json.decode(line).get("prompt")
                    except msgspec.DecodeError:
                        prompt = None
                    if prompt in prompts[job_id]:
                        removed += 1
                    else:
                        kept.append(line)
            tmp = path.with_name(path.name + ".redacting")
            tmp.write_bytes(b"".join(kept))
            tmp.replace(path)
        return removed

    def erasures(self, user_id: str | None = None) -> list[Erasure]:
        """Erasure records, newest first; only those of `user_id` (matched by its hash) when given."""
        query = select(Erasure).order_by(col(Erasure.at).desc(), col(Erasure.id))
        if user_id is not None:
            query = query.where(Erasure.user_hash == hashlib.sha256(user_id.encode()).hexdigest())
        with self._read() as s:
            return list(s.exec(query))

    # -- retention -------------------------------------------------------------------------------------

    def purge_payloads(self, older_than: dt.timedelta) -> int:
        """Drop the raw trajectories of sessions received before now - `older_than`; rows purged.

        Features and scores stay. A session still pending without features keeps its payload (it is
        needed to score it).
        """
        cutoff = utcnow() - older_than
        unscoreable = and_(col(SessionRow.score_status) == "pending", col(SessionRow.features).is_(None))
        statement = (
            update(SessionRow)
            .where(col(SessionRow.received_at) < cutoff, col(SessionRow.payload).is_not(None), ~unscoreable)
            .values(payload=None)
        )
        with self._write() as s:
            count = s.exec(statement).rowcount
            s.commit()
        if count:
            self._checkpoint()
        return int(count)

    def _checkpoint(self) -> None:
        """SQLite: copy the WAL into the file and truncate it, so deleted rows leave no copy in the WAL."""
        if self.engine.dialect.name != "sqlite" or _is_memory(self.url):
            return
        with self._serial, self._writers:
            raw = self.engine.raw_connection()  # outside any transaction (pysqlite's own BEGIN is off)
            try:
                busy, _, _ = raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                raw.close()
        if busy:  # a reader still holds an old snapshot: the next checkpoint (SQLite's own, or ours) finishes
            logger.info("WAL checkpoint after a deletion was blocked by a reader")

    # -- API keys (the hashing lives in gateway.keys) --------------------------------------------------

    def add_key(self, row: KeyRow) -> KeyRow:
        with self._write() as s:
            s.add(row)
            s.commit()
            return row

    def get_key(self, key_id: str) -> KeyRow | None:
        # Read on every authenticated request (a revocation holds at once): a Core select, half the ORM's cost.
        with self._serial, self.engine.connect() as conn:
            found = conn.execute(self._key_by_id, {"key_id": key_id}).first()
        return None if found is None else KeyRow(**found._mapping)

    def keys_with_prefix(self, prefix: str) -> list[KeyRow]:
        """Unrevoked keys whose token starts with `prefix`."""
        query = select(KeyRow).where(KeyRow.prefix == prefix, col(KeyRow.revoked_at).is_(None))
        with self._read() as s:
            return list(s.exec(query))

    def list_keys(self) -> list[KeyRow]:
        with self._read() as s:
            return list(s.exec(select(KeyRow).order_by(col(KeyRow.created_at), col(KeyRow.id))))

    def touch_key(self, key_id: str, *, at: dt.datetime, not_since: dt.datetime) -> bool:
        """Set last_used_at = `at` unless it was already set at or after `not_since`; whether it was set."""
        statement = (
            update(KeyRow)
            .where(
                col(KeyRow.id) == key_id,
                or_(col(KeyRow.last_used_at).is_(None), col(KeyRow.last_used_at) < not_since),
            )
            .values(last_used_at=at)
        )
        with self._write() as s:
            count = s.exec(statement).rowcount
            s.commit()
        return bool(count)

    def revoke_key(self, key_id: str) -> KeyRow | None:
        """Mark a key revoked (kept for the audit trail); None for an unknown id."""
        with self._write() as s:
            row = s.get(KeyRow, key_id)
            if row is None:
                return None
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                s.add(row)
                s.commit()
            return row

    # -- jobs ------------------------------------------------------------------------------------------

    def create_job(self, kind: str, spec: dict[str, Any]) -> JobRow:
        row = JobRow(id=uuid.uuid4().hex[:16], kind=kind, spec=dict(spec))
        with self._write() as s:
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
        with self._write() as s:
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
        with self._read() as s:
            return s.get(JobRow, job_id)

    def list_jobs(self, kind: str | None = None, *, limit: int = 100) -> list[JobRow]:
        """Jobs, newest first."""
        query = select(JobRow).order_by(col(JobRow.created_at).desc(), col(JobRow.id).desc()).limit(limit)
        if kind is not None:
            query = query.where(JobRow.kind == kind)
        with self._read() as s:
            return list(s.exec(query))

    # -- scores per (session, model) and rescoring jobs -------------------------------------------------

    def scores_of(self, session_id: str) -> list[SessionScoreRow]:
        """Every model's score of a session, oldest first."""
        with self._read() as s:
            return scores_of(s, session_id)

    def compare_models(self, a: str, b: str) -> dict[str, Any]:
        """Two models on the sessions both scored (see tacit.db.scores.compare_models)."""
        with self._read() as s:
            return compare_models(s, a, b)

    def model_label_history(self, user_id: str, mode: str, model_id: str, limit: int = 100) -> list[tuple[float, int]]:
        """(population probability by `model_id`, label) of the user's newest labelled sessions that model scored."""
        query = (
            select(SessionScoreRow.p_population, SessionRow.label)
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
        with self._read() as s:
            return [(float(p), int(label or 0)) for p, label in s.exec(query).all()]

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
        with self._write() as s:
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
        with self._read() as s:
            query = select(RescoreBatchRow).where(RescoreBatchRow.job_id == job_id)
            return list(s.exec(query.order_by(col(RescoreBatchRow.batch))))

    def start_rescore_batch(self, job_id: str, batch: int) -> tuple[JobRow, RescoreBatchRow] | None:
        """Mark a batch running (one more attempt) and its job too; None when there is nothing to do: the job is
        gone, finished or cancelled, or the batch is already done."""
        with self._write() as s:
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
        with self._read() as s:
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
            self._ensure_names(vector.feature_set, vector.feature_set_version, vector.names)
        with self._write() as s:
            part = s.get(RescoreBatchRow, (job_id, batch))
            if part is None or part.status not in ("queued", "running"):
                return False  # another delivery of this batch got there first
            by_id = {sc.session_id: sc for sc in scores}
            rows = (
                list(
                    s.exec(select(SessionRow).options(_LAZY_PAYLOAD).where(col(SessionRow.session_id).in_(list(by_id))))
                )
                if by_id
                else []
            )
            values = []
            for row in rows:
                sc = by_id[row.session_id]
                if current:
                    self._apply(row, sc)
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
            keep_scores(s, self._insert, values)
            by_vector = {v.session_id: v for v in vectors}
            for row in rows:
                fresh = by_vector.get(row.session_id)
                if fresh is not None and current:
                    row.feature_set, row.feature_set_version = fresh.feature_set, fresh.feature_set_version
                    row.features = self._checked_values(fresh.names, fresh.values)
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
        with self._write() as s:
            finish_batch(s, job_id, batch, status="failed", scored=0, failed=0, error=error)
            job = s.get(JobRow, job_id)
            if job is not None and job.status in ("queued", "running"):
                job.status, job.error, job.updated_at = "failed", error[:_MAX_ERROR_CHARS], utcnow()
                s.add(job)
            s.commit()

    def cancel_job(self, job_id: str) -> JobRow | None:
        """Ask a queued or running job to stop (its remaining batches are skipped); the job, None when unknown."""
        with self._write() as s:
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
        with self._write() as s:
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
