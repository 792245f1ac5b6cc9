"""The gateway database as one object: its unit of work and one repository per aggregate.

`store.sessions`, `store.scores`, `store.keys`, `store.jobs`, `store.rescoring`, `store.users` and
`store.alignment` share the Store's unit of work (`store.uow`: the engine, `read()` and `write()`), so every
repository method is one transaction with the same write serialisation on SQLite.
"""

from __future__ import annotations

from tacit.db.alignment import AlignmentJobs
from tacit.db.features import FeatureNames
from tacit.db.jobs import Jobs
from tacit.db.keys import Keys
from tacit.db.rescoring import RescoreJobs
from tacit.db.scores import MAX_SCORE_ATTEMPTS, Scores
from tacit.db.sessions import Sessions
from tacit.db.uow import UnitOfWork
from tacit.db.users import Users

__all__ = ["Store"]


class Store:
    """Access to the gateway database; `migrate()` once at start-up, `close()` at shutdown."""

    def __init__(self, url: str, *, max_score_attempts: int = MAX_SCORE_ATTEMPTS) -> None:
        if max_score_attempts < 1:
            raise ValueError("max_score_attempts must be >= 1")
        self.uow = UnitOfWork(url)
        self.url = url
        self.engine = self.uow.engine
        names = FeatureNames(self.uow)
        self.scores = Scores(self.uow, names, max_score_attempts=max_score_attempts)
        self.sessions = Sessions(self.uow, names, self.scores)
        self.keys = Keys(self.uow)
        self.jobs = Jobs(self.uow)
        self.rescoring = RescoreJobs(self.uow, names)
        self.users = Users(self.uow)
        self.alignment = AlignmentJobs(self.uow)

    def migrate(self, target: int | None = None) -> list[int]:
        """Bring the schema to the latest version (or `target`); returns the versions applied (none if current)."""
        return self.uow.migrate(target)

    def schema_version(self) -> int:
        return self.uow.schema_version()

    def close(self) -> None:
        """Close pooled connections."""
        self.uow.close()

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        return self.uow.ping()
