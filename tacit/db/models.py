"""The gateway's tables as sqlmodel classes: the schema as the code sees it after the latest migration.

The tables are created and changed only by the versioned steps in :mod:`tacit.db.migrations`; a test checks
that the migrated schema and these classes agree. They live in their own metadata (not SQLModel's global
one) so they never mix with another service's tables imported into the same process.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, Column, DateTime, Dialect, Float, Index, Integer, LargeBinary, String, Text, false
from sqlalchemy.orm import registry
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from tacit.schemas.jobs import JOB_STATUSES

__all__ = [
    "JOB_STATES",
    "SCOPES",
    "SCORE_STATES",
    "AlignmentJobRow",
    "AlignmentPairRow",
    "AlignmentPairUserRow",
    "Erasure",
    "FeatureNamesRow",
    "JobEventRow",
    "JobRow",
    "KeyRow",
    "RescoreBatchRow",
    "SessionRow",
    "SessionScoreRow",
    "TrainingSetRow",
    "UTCDateTime",
    "utcnow",
]

SCORE_STATES = ("pending", "scored", "failed")
JOB_STATES = JOB_STATUSES  # the shared vocabulary (tacit.schemas.jobs)
#: API key scopes; `admin` implies all the others.
SCOPES = ("ingest", "read", "train", "admin")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone: stored as naive UTC).

    A naive datetime passed in is taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def json_column(*, nullable: bool = True) -> Any:
    # none_as_null: Python None is SQL NULL (not the JSON text 'null'), so `IS NULL` means "not set".
    return Column(JSON(none_as_null=True), nullable=nullable)


class _Base(SQLModel, registry=registry()):
    pass


class SessionRow(_Base, table=True):
    """One ingested session: identity, consent, label, the raw payload, its features and its score.

    `payload` is the consent-stripped Session as zlib-compressed canonical JSON (None once purged by
    retention); use `Store.sessions.load_payload(row)` to read it (listings do not load it).
    """

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_user_received", "user_id", "received_at", "session_id"),
        Index("ix_sessions_status_received", "score_status", "received_at", "session_id"),
        # the per-user label history read on every ingest (per-user adaptation)
        Index("ix_sessions_user_mode_received", "user_id", "mode", "received_at"),
    )

    session_id: str = Field(sa_column=Column(String(128), primary_key=True))
    user_id: str = Field(sa_column=Column(String(128), nullable=False))
    task_id: str = Field(sa_column=Column(String(128), nullable=False))
    query_id: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    mode: str = Field(sa_column=Column(String(16), nullable=False))
    turn: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    received_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False, index=True)
    )
    consent_mouse: bool = Field(sa_column=Column(Boolean, nullable=False))
    consent_gaze: bool = Field(sa_column=Column(Boolean, nullable=False))
    consent_camera: bool = Field(sa_column=Column(Boolean, nullable=False))
    label: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    """Explicit feedback: pairwise right=1 / left=0, pointwise current=1 / previous=0; None without one."""
    payload: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    payload_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    """sha256 of the canonical JSON of the stored (stripped) session; kept after the payload is purged."""
    samples: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    """Samples over the kept response streams (mouse and gaze)."""
    feature_set: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    feature_set_version: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    features: list[float] | None = Field(default=None, sa_column=json_column())
    """Values only; their names are stored once per (feature_set, version) in `feature_names`."""
    score_status: str = Field(default="pending", sa_column=Column(String(16), nullable=False))
    score_attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    score_error: str = Field(default="", sa_column=Column(Text, nullable=False))
    p: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    preferred: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    confidence: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    quality: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    abstained: bool | None = Field(default=None, sa_column=Column(Boolean, nullable=True))
    model_id: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    model_demo: bool | None = Field(default=None, sa_column=Column(Boolean, nullable=True))
    p_population: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    """The model's probability for an average user; `p` is adapted to this user when `user_labels_used` > 0."""
    user_labels_used: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    score_kind: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    """`model`, or `out_of_fold` for a session of the scoring model's own training set (scored by the grouped
    cross-validation models that never saw its user); None for scores from before this was recorded."""
    scored_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    retry_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    """A pending session the reward service refused (409) waits until then, so it holds back no other."""
    demo: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))
    """Recorded with a demo browser token (anyone may mint one): never in training pairs unless asked for."""


class SessionScoreRow(_Base, table=True):
    """One model's score of one session: every model that scored a session keeps its own row, so two models can be
    compared on the same sessions (the session row holds the current one, of the model active when it was scored)."""

    __tablename__ = "session_scores"
    __table_args__ = (Index("ix_session_scores_model", "model_id", "session_id"),)

    session_id: str = Field(sa_column=Column(String(128), primary_key=True))
    model_id: str = Field(sa_column=Column(String(128), primary_key=True))
    user_id: str = Field(sa_column=Column(String(128), nullable=False, index=True))
    """Kept here too so that erasure and per-user reads need no join."""
    mode: str = Field(sa_column=Column(String(16), nullable=False))
    p: float = Field(sa_column=Column(Float, nullable=False))
    p_population: float = Field(sa_column=Column(Float, nullable=False))
    preferred: str = Field(sa_column=Column(String(16), nullable=False))
    confidence: float = Field(sa_column=Column(Float, nullable=False))
    quality: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    abstained: bool = Field(sa_column=Column(Boolean, nullable=False))
    user_labels_used: int = Field(sa_column=Column(Integer, nullable=False))
    score_kind: str = Field(sa_column=Column(String(16), nullable=False))
    model_demo: bool = Field(sa_column=Column(Boolean, nullable=False))
    scored_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class RescoreBatchRow(_Base, table=True):
    """One batch of a rescoring job: the sessions with ids in (after_id, last_id] that its selection matched.

    Each batch is one Celery task; a batch is idempotent per (session, model), so a redelivered one (its worker
    died) scores only what is still missing, and several workers share a job by taking its batches.
    """

    __tablename__ = "rescore_batches"

    job_id: str = Field(sa_column=Column(String(32), primary_key=True))
    batch: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    after_id: str = Field(sa_column=Column(String(128), nullable=False))
    last_id: str = Field(sa_column=Column(String(128), nullable=False))
    sessions: int = Field(sa_column=Column(Integer, nullable=False))
    status: str = Field(default="queued", sa_column=Column(String(16), nullable=False))
    scored: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    failed: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    error: str = Field(default="", sa_column=Column(Text, nullable=False))
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class FeatureNamesRow(_Base, table=True):
    """The ordered feature names of one (feature set, version), shared by every session's `features`."""

    __tablename__ = "feature_names"

    feature_set: str = Field(sa_column=Column(String(64), primary_key=True))
    version: str = Field(sa_column=Column(String(64), primary_key=True))
    names: list[str] = Field(sa_column=json_column(nullable=False))


class KeyRow(_Base, table=True):
    """An API key: only a salted scrypt hash of the token is stored, never the token."""

    __tablename__ = "api_keys"

    id: str = Field(sa_column=Column(String(32), primary_key=True))
    name: str = Field(default="", sa_column=Column(String(200), nullable=False))
    prefix: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    """The start of the token (`tacit_` and 8 characters of its secret): shown in listings, used for lookup."""
    hash: str = Field(sa_column=Column(String(256), nullable=False))
    scopes: list[str] = Field(sa_column=json_column(nullable=False))
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    last_used_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    revoked_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class Erasure(_Base, table=True):
    """The record of one user erasure: a hash of the user id (never the id), counts and affected models."""

    __tablename__ = "erasures"

    id: str = Field(sa_column=Column(String(32), primary_key=True))
    user_hash: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    """sha256 hex of the erased user id."""
    at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    rows_deleted: dict[str, int] = Field(sa_column=json_column(nullable=False))
    """Rows deleted per table."""
    models_affected: list[str] = Field(sa_column=json_column(nullable=False))
    """Reward model ids whose training set included the user (they still carry what they learned)."""


class TrainingSetRow(_Base, table=True):
    """One user whose sessions a reward model was trained on."""

    __tablename__ = "training_sets"

    model_id: str = Field(sa_column=Column(String(128), primary_key=True))
    user_id: str = Field(sa_column=Column(String(128), primary_key=True, index=True))


class JobRow(_Base, table=True):
    """A background job run by the gateway (e.g. an IFLLM import) with its progress and result."""

    __tablename__ = "jobs"

    id: str = Field(sa_column=Column(String(32), primary_key=True))
    kind: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    status: str = Field(default="queued", sa_column=Column(String(16), nullable=False))
    stage: str = Field(default="", sa_column=Column(String(200), nullable=False))
    done: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    total: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    error: str = Field(default="", sa_column=Column(Text, nullable=False))
    spec: dict[str, Any] = Field(sa_column=json_column(nullable=False))
    result: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class AlignmentJobRow(_Base, table=True):
    """An alignment job: its spec, the summary of its pair snapshot, its state machine and progress.

    queued -> running -> succeeded | failed | cancelled; `attempts` counts the times a worker started it (a
    redelivered job resumes from its checkpoint). The gateway creates it; the worker moves it on.
    """

    __tablename__ = "alignment_jobs"
    __table_args__ = (Index("ix_alignment_jobs_created", "created_at", "id"),)

    id: str = Field(sa_column=Column(String(32), primary_key=True))
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    status: str = Field(default="queued", sa_column=Column(String(16), nullable=False, index=True))
    spec: dict[str, Any] = Field(sa_column=json_column(nullable=False))
    data: dict[str, Any] = Field(sa_column=json_column(nullable=False))
    """The DataSummary of the pair snapshot."""
    progress: dict[str, Any] = Field(default_factory=dict, sa_column=json_column(nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    cancel_requested: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    error: str = Field(default="", sa_column=Column(Text, nullable=False))
    result: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    worker: str = Field(default="", sa_column=Column(String(200), nullable=False))
    created_by: str = Field(default="", sa_column=Column(String(32), nullable=False))
    """Id of the API key that created it."""
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    started_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    finished_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class AlignmentPairRow(_Base, table=True):
    """One preference pair of a job's snapshot (a PreferencePair as JSON)."""

    __tablename__ = "alignment_pairs"

    job_id: str = Field(sa_column=Column(String(32), primary_key=True))
    pair_id: str = Field(sa_column=Column(String(32), primary_key=True))
    split: str = Field(sa_column=Column(String(8), nullable=False))
    pair: dict[str, Any] = Field(sa_column=json_column(nullable=False))


class AlignmentPairUserRow(_Base, table=True):
    """A user whose sessions a pair was built from: erasure deletes the user's pairs through it."""

    __tablename__ = "alignment_pair_users"

    job_id: str = Field(sa_column=Column(String(32), primary_key=True))
    pair_id: str = Field(sa_column=Column(String(32), primary_key=True))
    user_id: str = Field(sa_column=Column(String(128), primary_key=True, index=True))


class JobEventRow(_Base, table=True):
    """One entry of a job's event log; `id` orders the log (and is the SSE event id)."""

    __tablename__ = "job_events"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    job_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    data: dict[str, Any] = Field(default_factory=dict, sa_column=json_column(nullable=False))
