"""The unit of work: one engine per database and the transaction boundary that every repository goes through.

Every repository method is synchronous and runs one short transaction (`read()` or `write()`), so the HTTP layer
calls them from a thread pool. SQLite (the default) runs in WAL mode with transactions begun explicitly (`BEGIN
IMMEDIATE` for writes, so two writers queue on the busy timeout instead of failing on a stale snapshot);
PostgreSQL runs at its default READ COMMITTED isolation.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import Session as DbSession

from tacit.db.migrations import current_version, migrate

__all__ = ["UnitOfWork"]

logger = logging.getLogger(__name__)


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


class UnitOfWork:
    """The engine of one database and its transactions: `read()` and `write()` open one each.

    A repository opens exactly one of them per method, so each method is one transaction; `insert` is the
    dialect's INSERT (for ON CONFLICT clauses).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        backend = make_url(url).get_backend_name()
        if backend == "sqlite":
            self.engine = _sqlite_engine(url)
            self.insert: Any = sqlite_insert
        elif backend == "postgresql":
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
            self.insert = postgresql_insert
        else:
            raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql+psycopg://")
        self._writer = self.engine.execution_options(tacit_begin="IMMEDIATE")
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

    # -- transactions ----------------------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[DbSession]:
        """An ORM session for reads (never committed)."""
        with self._serial, DbSession(self.engine, expire_on_commit=False) as s:
            yield s

    @contextmanager
    def write(self) -> Iterator[DbSession]:
        """An ORM session for one write transaction (`BEGIN IMMEDIATE` on SQLite); the caller commits."""
        with self._serial, self._writers, DbSession(self._writer, expire_on_commit=False) as s:
            yield s

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A Core connection for the hottest reads (about half the ORM's cost)."""
        with self._serial, self.engine.connect() as conn:
            yield conn

    def checkpoint(self) -> None:
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
