"""The gateway database, in the kernel so that the gateway and the alignment worker share it: sqlmodel tables,
versioned migrations, a unit of work and one repository per aggregate, gathered by the Store (SQLite default,
PostgreSQL in production). It imports no service."""

from tacit.db.alignment import AlignmentJobs
from tacit.db.jobs import Jobs
from tacit.db.keys import Keys
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
from tacit.db.rescoring import RescoreJobs
from tacit.db.scores import MAX_SCORE_ATTEMPTS, OutOfFold, Scores
from tacit.db.sessions import (
    InvalidCursorError,
    PayloadPurgedError,
    SessionConflict,
    Sessions,
    TrainingCandidate,
)
from tacit.db.store import Store
from tacit.db.uow import UnitOfWork
from tacit.db.users import USER_TABLES, Users

__all__ = [
    "JOB_STATES",
    "LATEST",
    "MAX_SCORE_ATTEMPTS",
    "SCOPES",
    "SCORE_STATES",
    "USER_TABLES",
    "AlignmentJobs",
    "Erasure",
    "FeatureNamesRow",
    "InvalidCursorError",
    "JobRow",
    "Jobs",
    "KeyRow",
    "Keys",
    "OutOfFold",
    "PayloadPurgedError",
    "RescoreJobs",
    "SchemaTooNewError",
    "Scores",
    "SessionConflict",
    "SessionRow",
    "Sessions",
    "Store",
    "TrainingCandidate",
    "TrainingSetRow",
    "UnitOfWork",
    "Users",
    "strip_unconsented",
]
