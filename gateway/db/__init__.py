"""Gateway storage: sqlmodel tables, versioned migrations and the Store (SQLite default, PostgreSQL in production)."""

from gateway.db.migrations import LATEST, SchemaTooNewError
from gateway.db.models import (
    JOB_STATES,
    SCOPES,
    SCORE_STATES,
    Erasure,
    FeatureNamesRow,
    JobRow,
    KeyRow,
    SessionRow,
    TrainingSetRow,
)
from gateway.db.payload import strip_unconsented
from gateway.db.store import (
    MAX_SCORE_ATTEMPTS,
    USER_TABLES,
    InvalidCursorError,
    OutOfFold,
    PayloadPurgedError,
    SessionConflict,
    Store,
    TrainingCandidate,
)

__all__ = [
    "JOB_STATES",
    "LATEST",
    "MAX_SCORE_ATTEMPTS",
    "SCOPES",
    "SCORE_STATES",
    "USER_TABLES",
    "Erasure",
    "FeatureNamesRow",
    "InvalidCursorError",
    "JobRow",
    "KeyRow",
    "OutOfFold",
    "PayloadPurgedError",
    "SchemaTooNewError",
    "SessionConflict",
    "SessionRow",
    "Store",
    "TrainingCandidate",
    "TrainingSetRow",
    "strip_unconsented",
]
