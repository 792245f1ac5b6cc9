"""The gateway database, in the kernel so that the gateway and the alignment worker share it: sqlmodel tables,
versioned migrations and the Store (SQLite default, PostgreSQL in production). It imports no service."""

from tacit.db.migrations import LATEST, SchemaTooNewError
from tacit.db.models import (
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
from tacit.db.payload import strip_unconsented
from tacit.db.store import (
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
