"""Versioned schema migrations without alembic: an ordered list of steps and a `schema_version` table.

Each step is a function of a Connection that runs inside one transaction together with the insert of its
row in `schema_version`, so a step is either fully applied and recorded or not at all (PostgreSQL has
transactional DDL; on SQLite the Store opens `BEGIN IMMEDIATE` itself, see `tacit.db.store`). Steps
are frozen once released: they spell out the tables they create instead of importing the current models,
so a new column is a new step, never an edit of an old one. Concurrent start-ups serialise on a lock
(an advisory lock on PostgreSQL, the write lock on SQLite) and re-read the version inside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
    text,
)

__all__ = ["LATEST", "MIGRATIONS", "Migration", "SchemaTooNewError", "current_version", "migrate"]

#: pg_advisory_xact_lock key shared by every gateway process migrating the same database ("tacitgw").
_PG_LOCK_KEY = 0x74616369_7467_77

_VERSION_META = MetaData()
schema_version = Table(
    "schema_version",
    _VERSION_META,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False, server_default=func.current_timestamp()),
)


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer tacit than this one: refuse to touch it."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"the database schema is at version {found} but this tacit only knows versions up to {known}: "
            "upgrade tacit, or point TACIT_DATABASE_URL at another database"
        )
        self.found = found
        self.known = known


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    meta = MetaData()
    ts = DateTime(timezone=True)
    Table(
        "sessions",
        meta,
        Column("session_id", String(128), primary_key=True),
        Column("user_id", String(128), nullable=False, index=True),
        Column("task_id", String(128), nullable=False),
        Column("query_id", String(128)),
        Column("mode", String(16), nullable=False),
        Column("turn", Integer),
        Column("received_at", ts, nullable=False, index=True),
        Column("consent_mouse", Boolean, nullable=False),
        Column("consent_gaze", Boolean, nullable=False),
        Column("consent_camera", Boolean, nullable=False),
        Column("label", Integer),
        Column("payload", LargeBinary),
        Column("payload_sha256", String(64), nullable=False),
        Column("samples", Integer, nullable=False),
        Column("feature_set", String(64)),
        Column("feature_set_version", String(64)),
        Column("features", JSON),
        Column("score_status", String(16), nullable=False),
        Column("score_attempts", Integer, nullable=False),
        Column("score_error", Text, nullable=False),
        Column("p", Float),
        Column("preferred", String(16)),
        Column("confidence", Float),
        Column("quality", Float),
        Column("abstained", Boolean),
        Column("model_id", String(128)),
        Column("model_demo", Boolean),
        Column("scored_at", ts),
    )
    Table(
        "feature_names",
        meta,
        Column("feature_set", String(64), primary_key=True),
        Column("version", String(64), primary_key=True),
        Column("names", JSON, nullable=False),
    )
    Table(
        "api_keys",
        meta,
        Column("id", String(32), primary_key=True),
        Column("name", String(200), nullable=False),
        Column("prefix", String(32), nullable=False, index=True),
        Column("hash", String(256), nullable=False),
        Column("scopes", JSON, nullable=False),
        Column("created_at", ts, nullable=False),
        Column("last_used_at", ts),
        Column("revoked_at", ts),
    )
    Table(
        "erasures",
        meta,
        Column("id", String(32), primary_key=True),
        Column("user_hash", String(64), nullable=False, index=True),
        Column("at", ts, nullable=False),
        Column("rows_deleted", JSON, nullable=False),
        Column("models_affected", JSON, nullable=False),
    )
    Table(
        "training_sets",
        meta,
        Column("model_id", String(128), primary_key=True),
        Column("user_id", String(128), primary_key=True, index=True),
    )
    Table(
        "jobs",
        meta,
        Column("id", String(32), primary_key=True),
        Column("kind", String(64), nullable=False, index=True),
        Column("status", String(16), nullable=False),
        Column("stage", String(200), nullable=False),
        Column("done", Integer, nullable=False),
        Column("total", Integer, nullable=False),
        Column("error", Text, nullable=False),
        Column("spec", JSON, nullable=False),
        Column("result", JSON),
        Column("created_at", ts, nullable=False),
        Column("updated_at", ts, nullable=False),
    )
    meta.create_all(conn, checkfirst=False)


def _v2_session_indexes(conn: Connection) -> None:
    # list_sessions(user_id=...) and pending() page on (received_at, session_id) within a user or a status;
    # composite indexes let both read in index order. The user_id index is a prefix of the new one.
    sessions = Table(
        "sessions",
        MetaData(),
        Column("session_id", String(128)),
        Column("user_id", String(128)),
        Column("received_at", DateTime(timezone=True)),
        Column("score_status", String(16)),
    )
    c = sessions.c
    Index("ix_sessions_user_received", c.user_id, c.received_at, c.session_id).create(conn)
    Index("ix_sessions_status_received", c.score_status, c.received_at, c.session_id).create(conn)
    conn.execute(text("DROP INDEX ix_sessions_user_id"))


def _v3_alignment(conn: Connection) -> None:
    meta = MetaData()
    ts = DateTime(timezone=True)
    Table(
        "alignment_jobs",
        meta,
        Column("id", String(32), primary_key=True),
        Column("kind", String(16), nullable=False),
        Column("status", String(16), nullable=False, index=True),
        Column("spec", JSON, nullable=False),
        Column("data", JSON, nullable=False),
        Column("progress", JSON, nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("cancel_requested", Boolean, nullable=False),
        Column("error", Text, nullable=False),
        Column("result", JSON),
        Column("worker", String(200), nullable=False),
        Column("created_by", String(32), nullable=False),
        Column("created_at", ts, nullable=False),
        Column("started_at", ts),
        Column("finished_at", ts),
        Column("updated_at", ts, nullable=False),
        Index("ix_alignment_jobs_created", "created_at", "id"),
    )
    Table(
        "alignment_pairs",
        meta,
        Column("job_id", String(32), primary_key=True),
        Column("pair_id", String(32), primary_key=True),
        Column("split", String(8), nullable=False),
        Column("pair", JSON, nullable=False),
    )
    Table(
        "alignment_pair_users",
        meta,
        Column("job_id", String(32), primary_key=True),
        Column("pair_id", String(32), primary_key=True),
        Column("user_id", String(128), primary_key=True, index=True),
    )
    Table(
        "job_events",
        meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("job_id", String(32), nullable=False, index=True),
        Column("at", ts, nullable=False),
        Column("kind", String(32), nullable=False),
        Column("data", JSON, nullable=False),
    )
    meta.create_all(conn, checkfirst=False)


def _v4_session_retry_and_demo(conn: Connection) -> None:
    # retry_at: a session the reward service refused waits without blocking the rescoring of others.
    # demo: sessions recorded with demo browser tokens, kept out of training pairs.
    ts = "TIMESTAMP WITH TIME ZONE" if conn.dialect.name == "postgresql" else "DATETIME"
    conn.execute(text(f"ALTER TABLE sessions ADD COLUMN retry_at {ts}"))
    conn.execute(text("ALTER TABLE sessions ADD COLUMN demo BOOLEAN NOT NULL DEFAULT FALSE"))


def _v5_session_adaptation(conn: Connection) -> None:
    # per-user adaptation: the population probability beside the adapted one, and how many labels adapted it;
    # the index serves the per-user label history read on every ingest: newest first, stopping at the limit
    conn.execute(text("ALTER TABLE sessions ADD COLUMN p_population FLOAT"))
    conn.execute(text("ALTER TABLE sessions ADD COLUMN user_labels_used INTEGER"))
    conn.execute(text("CREATE INDEX ix_sessions_user_mode_received ON sessions (user_id, mode, received_at)"))


def _v6_score_kind(conn: Connection) -> None:
    # out_of_fold: a session of the scoring model's training set, scored by models that never saw its user
    conn.execute(text("ALTER TABLE sessions ADD COLUMN score_kind VARCHAR(16)"))


def _v7_scores_per_model(conn: Connection) -> None:
    # one score per (session, model), so models can be compared on the same sessions; a rescoring job's batches
    meta = MetaData()
    ts = DateTime(timezone=True)
    Table(
        "session_scores",
        meta,
        Column("session_id", String(128), primary_key=True),
        Column("model_id", String(128), primary_key=True),
        Column("user_id", String(128), nullable=False, index=True),
        Column("mode", String(16), nullable=False),
        Column("p", Float, nullable=False),
        Column("p_population", Float, nullable=False),
        Column("preferred", String(16), nullable=False),
        Column("confidence", Float, nullable=False),
        Column("quality", Float),
        Column("abstained", Boolean, nullable=False),
        Column("user_labels_used", Integer, nullable=False),
        Column("score_kind", String(16), nullable=False),
        Column("model_demo", Boolean, nullable=False),
        Column("scored_at", ts, nullable=False),
        Index("ix_session_scores_model", "model_id", "session_id"),
    )
    Table(
        "rescore_batches",
        meta,
        Column("job_id", String(32), primary_key=True),
        Column("batch", Integer, primary_key=True, autoincrement=False),
        Column("after_id", String(128), nullable=False),
        Column("last_id", String(128), nullable=False),
        Column("sessions", Integer, nullable=False),
        Column("status", String(16), nullable=False),
        Column("scored", Integer, nullable=False),
        Column("failed", Integer, nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("error", Text, nullable=False),
        Column("updated_at", ts, nullable=False),
    )
    meta.create_all(conn, checkfirst=False)
    # every score recorded so far becomes the first score of its (session, model)
    conn.execute(
        text(
            "INSERT INTO session_scores (session_id, model_id, user_id, mode, p, p_population, preferred, confidence,"
            " quality, abstained, user_labels_used, score_kind, model_demo, scored_at)"
            " SELECT session_id, model_id, user_id, mode, p, COALESCE(p_population, p), preferred, confidence,"
            " quality, COALESCE(abstained, FALSE), COALESCE(user_labels_used, 0), COALESCE(score_kind, 'model'),"
            " COALESCE(model_demo, FALSE), COALESCE(scored_at, received_at)"
            " FROM sessions WHERE score_status = 'scored' AND model_id IS NOT NULL AND p IS NOT NULL"
            " AND preferred IS NOT NULL AND confidence IS NOT NULL"
        )
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial tables", _v1_initial),
    Migration(2, "composite indexes for per-user listing and the pending scan", _v2_session_indexes),
    Migration(3, "alignment jobs, their pair snapshots and the job event log", _v3_alignment),
    Migration(4, "sessions: retry_at of refused scorings, demo flag", _v4_session_retry_and_demo),
    Migration(5, "sessions: population probability and labels used by per-user adaptation", _v5_session_adaptation),
    Migration(6, "sessions: score kind (model or out-of-fold)", _v6_score_kind),
    Migration(7, "scores per (session, model) and rescoring-job batches", _v7_scores_per_model),
)
LATEST = MIGRATIONS[-1].version


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK_KEY)))


def _read_version(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(schema_version.c.version), 0))).scalar_one())


def current_version(engine: Engine) -> int:
    """The database's schema version (0 when it was never migrated)."""
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, "schema_version"):
            return 0
        return _read_version(conn)


def migrate(engine: Engine, *, target: int | None = None, steps: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply the steps above the database's version (up to `target`), one transaction each; the versions applied.

    Raises SchemaTooNewError when the database is at a version newer than the last step known.
    """
    known = steps[-1].version if steps else 0
    target = known if target is None else target
    if not 0 <= target <= known:
        raise ValueError(f"target version {target} is not between 0 and {known}")
    with engine.begin() as conn:
        _lock(conn)
        schema_version.create(conn, checkfirst=True)
        found = _read_version(conn)
    if found > known:
        raise SchemaTooNewError(found, known)
    applied = []
    for step in steps:
        if step.version <= found or step.version > target:
            continue
        with engine.begin() as conn:
            _lock(conn)
            found = _read_version(conn)  # another process may have applied it meanwhile
            if found > known:
                raise SchemaTooNewError(found, known)
            if step.version <= found:
                continue
            step.apply(conn)
            conn.execute(schema_version.insert().values(version=step.version, name=step.name))
        applied.append(step.version)
        found = step.version
    return applied
