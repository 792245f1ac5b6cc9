"""Reward-model registry: one row per training run, with status, progress, scores and the active flag.

A model trained from stored sessions also has its training set here: one row per session (id, user, content
hash, label, the feature vector it was trained on and, once trained, its out-of-fold probability) and one
summary row (counts). sqlmodel on SQLite by default (a file under the data home) or PostgreSQL
(`TACIT_REWARD_DATABASE_URL`); tables are created on first use. There is no migration framework: a column added
later is listed in `_ADDED_COLUMNS` and added to an existing table at start-up (idempotent, nullable or with a
default). The pure training code never touches it; the Celery task and the HTTP edge do.

A run's life: queued -> running (claimed by one worker, `worker`, whose progress steps are its heartbeat) ->
succeeded | failed | cancelled. Every write of a running run is conditional on it still being that worker's, so
a cancelled, reaped or taken-over run is never overwritten by the worker that lost it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Column, Engine, and_, delete, func, inspect, text, update
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlmodel import Field, Session, SQLModel, col, create_engine, select

from tacit.schemas.problem import RequestError

__all__ = [
    "WORKER_LOST",
    "Claim",
    "ModelBusyError",
    "ModelRow",
    "ModelStateError",
    "Registry",
    "TrainingRowRow",
    "TrainingSetRow",
]

logger = logging.getLogger(__name__)

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
#: A run that is not over: it cannot be deleted (cancel it first).
UNFINISHED = ("queued", "running")
#: The error of a run the reaper failed; a redelivery of its task may take it over and train again.
WORKER_LOST = "worker lost"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: dt.datetime) -> dt.datetime:
    """An aware UTC time (sqlmodel returns UTC; a naive value is taken to be UTC already)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class ModelRow(SQLModel, table=True):
    """A reward model: requested, being trained, trained (with its artifact), failed or cancelled."""

    __tablename__ = "reward_models"

    id: str = Field(primary_key=True)
    task: str = Field(index=True)
    model_name: str
    feature_set: str
    feature_set_version: str = ""
    feature_mode: str = "default"
    status: str = Field(default="queued", index=True)
    stage: str = ""
    done: int = 0
    total: int = 0
    error: str = ""
    artifact: str = ""
    metrics_json: str = "{}"
    spec_json: str = "{}"
    data_hash: str = ""
    demo: bool = False
    """Trained on simulated sessions (a demo), never on people."""
    active: bool = Field(default=False, index=True)
    created_at: dt.datetime = Field(default_factory=_now)
    finished_at: dt.datetime | None = None
    worker: str = ""
    """The worker running it (`host:pid/token`), set when a worker claims it."""
    heartbeat_at: dt.datetime | None = None
    """When its worker last reported; a running model silent past the stale limit is reaped."""

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(json.loads(self.metrics_json or "{}"))

    def silent_for(self, now: dt.datetime | None = None) -> float:
        """Seconds since its worker last reported (since it was created when no worker ever did)."""
        return ((now or _now()) - _utc(self.heartbeat_at or self.created_at)).total_seconds()


class TrainingRowRow(SQLModel, table=True):
    """One stored session of a model's training set (erasing its user deletes it)."""

    __tablename__ = "reward_training_rows"

    model_id: str = Field(primary_key=True)
    session_id: str = Field(primary_key=True)
    user_id: str = Field(index=True)
    task_id: str
    turn: int = 0
    label: int
    samples: int = 0
    content_hash: str
    values: list[float] = Field(sa_column=Column(JSON, nullable=False))
    p_oof: float | None = None
    """P(class 1) from the grouped cross-validation models that did not see this user (mean over seeds)."""


class TrainingSetRow(SQLModel, table=True):
    """What a model was trained on, in counts (kept after erasure: the model still carries what it learned)."""

    __tablename__ = "reward_training_sets"

    model_id: str = Field(primary_key=True)
    source: str
    sessions: int
    users: int
    labels_json: str = "{}"
    digest: str = ""
    feature_set: str = ""
    feature_set_version: str = ""
    names_json: str = "[]"
    """The ordered feature names of the rows' `values`."""

    @property
    def labels(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in json.loads(self.labels_json or "{}").items()}

    @property
    def names(self) -> list[str]:
        return [str(n) for n in json.loads(self.names_json or "[]")]


_TABLES = (ModelRow, TrainingRowRow, TrainingSetRow)

#: Columns added to tables after a registry could already exist, with what their DDL adds to the column's type
#: (the type itself is the model's, as `create_all` makes it on a new database).
_ADDED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "reward_models": (("worker", "NOT NULL DEFAULT ''"), ("heartbeat_at", "NULL")),
}
_MODELS: dict[str, Any] = {t.__tablename__: t.__table__ for t in _TABLES}  # type: ignore[union-attr]


def _add_columns(engine: Engine) -> list[str]:
    """Add the `_ADDED_COLUMNS` a registry made by earlier code lacks; the columns added (idempotent, and safe
    when several processes start at once: a column another one added meanwhile is not an error)."""
    added = []
    names = inspect(engine)
    for table, columns in _ADDED_COLUMNS.items():
        present = {c["name"] for c in names.get_columns(table)}
        for name, extra in columns:
            if name in present:
                continue
            kind = _MODELS[table].c[name].type.compile(dialect=engine.dialect)
            guard = "IF NOT EXISTS " if engine.dialect.name == "postgresql" else ""
            try:
                with engine.begin() as conn:
                    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {guard}{name} {kind} {extra}"))
            except (OperationalError, ProgrammingError) as err:
                if "duplicate column" not in str(err).lower():
                    raise
            added.append(f"{table}.{name}")
    if added:
        logger.info("registry: added columns %s", ", ".join(added))
    return added


class ModelBusyError(RuntimeError):
    """A running model whose worker was heard from recently: another worker is on it."""

    def __init__(self, model_id: str, worker: str, silent_s: float) -> None:
        super().__init__(
            f"reward model {model_id} is running on {worker or 'another worker'} (heard {silent_s:.0f} s ago)"
        )
        self.model_id, self.worker, self.silent_s = model_id, worker, silent_s


class ModelStateError(RequestError, ValueError):
    """A request its model's state does not allow (409 `conflict`); `field` is the one that forbids it."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(409, "conflict", field, detail)


class Claim:
    """A run this worker now owns; `took_over` names what it replaced (a lost worker's run), else empty."""

    def __init__(self, row: ModelRow, took_over: str = "") -> None:
        self.row, self.took_over = row, took_over


class Registry:
    """Access to the registry tables (created on first use)."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"check_same_thread": False} if url.startswith("sqlite") else {}
        self.engine: Engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        tables = [t.__table__ for t in _TABLES]  # type: ignore[union-attr]
        SQLModel.metadata.create_all(self.engine, tables=tables)
        _add_columns(self.engine)

    def close(self) -> None:
        """Close pooled connections (tests, shutdown)."""
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def create(
        self,
        *,
        task: str,
        model_name: str,
        feature_set: str,
        spec: dict[str, Any],
        demo: bool = False,
        training_set: TrainingSetRow | None = None,
        training_rows: Sequence[TrainingRowRow] = (),
    ) -> ModelRow:
        """A queued model, with its training set (summary and rows) in the same transaction when given."""
        row = ModelRow(
            id=uuid.uuid4().hex[:16],
            task=task,
            model_name=model_name,
            feature_set=feature_set,
            spec_json=json.dumps(spec, sort_keys=True, default=str),
            demo=demo,
        )
        with self.session() as s:
            s.add(row)
            if training_set is not None:
                training_set.model_id = row.id
                s.add(training_set)
            for item in training_rows:
                item.model_id = row.id
                s.add(item)
            s.commit()
            s.refresh(row)
        return row

    def delete(self, model_id: str) -> None:
        """Remove a model with its training set (a job that could not be queued)."""
        with self.session() as s:
            s.exec(delete(TrainingRowRow).where(col(TrainingRowRow.model_id) == model_id))
            s.exec(delete(TrainingSetRow).where(col(TrainingSetRow.model_id) == model_id))
            s.exec(delete(ModelRow).where(col(ModelRow.id) == model_id))
            s.commit()

    def record_training_set(self, model_id: str, summary: TrainingSetRow, rows: Sequence[TrainingRowRow] = ()) -> None:
        """Record the training set of a model trained from a folder (once: a retried job records nothing new)."""
        with self.session() as s:
            if s.get(TrainingSetRow, model_id) is not None:
                return
            summary.model_id = model_id
            s.add(summary)
            for row in rows:
                row.model_id = model_id
                s.add(row)
            s.commit()

    def training_set(self, model_id: str) -> TrainingSetRow | None:
        with self.session() as s:
            return s.get(TrainingSetRow, model_id)

    def training_sets(self, model_ids: Iterable[str]) -> dict[str, TrainingSetRow]:
        ids = list(model_ids)
        if not ids:
            return {}
        with self.session() as s:
            rows = s.exec(select(TrainingSetRow).where(col(TrainingSetRow.model_id).in_(ids)))
            return {row.model_id: row for row in rows}

    def training_rows(self, model_id: str) -> list[TrainingRowRow]:
        """The model's training sessions, in session-id order."""
        query = (
            select(TrainingRowRow).where(TrainingRowRow.model_id == model_id).order_by(col(TrainingRowRow.session_id))
        )
        with self.session() as s:
            return list(s.exec(query))

    def set_out_of_fold(self, model_id: str, probabilities: dict[str, float]) -> int:
        """Store the out-of-fold probability of each training session; rows updated."""
        with self.session() as s:
            rows = list(s.exec(select(TrainingRowRow).where(TrainingRowRow.model_id == model_id)))
            for row in rows:
                if row.session_id in probabilities:
                    row.p_oof = float(probabilities[row.session_id])
                    s.add(row)
            s.commit()
        return sum(row.session_id in probabilities for row in rows)

    def out_of_fold(self, model_id: str) -> dict[str, float]:
        """session id -> out-of-fold probability of the model's training sessions (those that have one)."""
        query = select(TrainingRowRow.session_id, TrainingRowRow.p_oof).where(
            TrainingRowRow.model_id == model_id, col(TrainingRowRow.p_oof).is_not(None)
        )
        with self.session() as s:
            return {sid: float(p) for sid, p in s.exec(query) if p is not None}

    def erase_user(self, user_id: str) -> tuple[int, list[str]]:
        """Delete the user's training-set rows of every model; (rows deleted, the models they belonged to)."""
        with self.session() as s:
            models = sorted(set(s.exec(select(TrainingRowRow.model_id).where(TrainingRowRow.user_id == user_id)).all()))
            count = s.exec(delete(TrainingRowRow).where(col(TrainingRowRow.user_id) == user_id)).rowcount
            s.commit()
        return int(count), models

    def count_training_rows(self) -> int:
        with self.session() as s:
            return int(s.exec(select(func.count()).select_from(TrainingRowRow)).one())

    def get(self, model_id: str) -> ModelRow | None:
        with self.session() as s:
            return s.get(ModelRow, model_id)

    def list(self, task: str | None = None) -> list[ModelRow]:
        with self.session() as s:
            query = select(ModelRow).order_by(ModelRow.created_at.desc())  # type: ignore[attr-defined]
            if task:
                query = query.where(ModelRow.task == task)
            return list(s.exec(query))

    def update(self, model_id: str, **values: Any) -> ModelRow:
        with self.session() as s:
            row = s.get(ModelRow, model_id)
            if row is None:
                raise KeyError(model_id)
            for key, value in values.items():
                setattr(row, key, value)
            s.add(row)
            s.commit()
            s.refresh(row)
            return row

    # -- a run's life: claim, heartbeat, finish; cancel, reap, remove ----------------------------------------------

    def claim(self, model_id: str, worker: str, *, stale_after_s: float | None = None) -> Claim | None:
        """Make a run `worker`'s: a queued one, one the reaper failed (worker lost), or a running one whose worker
        has been silent for `stale_after_s` (a redelivery after its worker died).

        None when there is nothing to do (succeeded, cancelled, or failed for a reason of its own: a retry would
        fail the same way); ModelBusyError when another worker is on it; KeyError when there is no such model.
        """
        for _ in range(3):  # a claim that loses a race looks again
            row = self.get(model_id)
            if row is None:
                raise KeyError(model_id)
            took_over = ""
            if row.status in ("succeeded", "cancelled"):
                return None
            if row.status == "failed":
                if not row.error.startswith(WORKER_LOST):
                    return None
                took_over = row.error
            elif row.status == "running":
                silent = row.silent_for()
                if stale_after_s is None or silent < stale_after_s:
                    raise ModelBusyError(model_id, row.worker, silent)
                took_over = f"{WORKER_LOST}: no heartbeat for {silent:.0f} s"
            seen = (
                col(ModelRow.heartbeat_at).is_(None)
                if row.heartbeat_at is None
                else col(ModelRow.heartbeat_at) <= row.heartbeat_at
            )
            claimed = self._set_if(
                and_(
                    col(ModelRow.id) == model_id,
                    col(ModelRow.status) == row.status,
                    col(ModelRow.worker) == row.worker,
                    seen,
                ),
                status="running",
                worker=worker,
                heartbeat_at=_now(),
                error="",
                stage="",
                done=0,
                total=0,
                finished_at=None,
            )
            if claimed:
                got = self.get(model_id)
                if got is not None:
                    return Claim(got, took_over)
        raise ModelBusyError(model_id, "", 0.0)

    def _set_if(self, condition: Any, **values: Any) -> bool:
        """One conditional UPDATE of reward_models; whether it changed a row (compare-and-set on both databases)."""
        with self.session() as s:
            result = s.exec(update(ModelRow).where(condition).values(**values))
            s.commit()
        return bool(result.rowcount == 1)

    def _mine(self, model_id: str, worker: str) -> Any:
        return and_(col(ModelRow.id) == model_id, col(ModelRow.status) == "running", col(ModelRow.worker) == worker)

    def beat(self, model_id: str, worker: str, **progress: Any) -> bool:
        """Record a running model's progress (its heartbeat); False when the run is no longer `worker`'s (cancelled,
        reaped, taken over or deleted): the worker stops."""
        return self._set_if(self._mine(model_id, worker), heartbeat_at=_now(), **progress)

    def finish(self, model_id: str, worker: str, **values: Any) -> ModelRow | None:
        """End `worker`'s run with `values` (its status among them); None, and nothing written, when the run is no
        longer its own."""
        if not self._set_if(self._mine(model_id, worker), heartbeat_at=_now(), **values):
            return None
        return self.get(model_id)

    def cancel(self, model_id: str, reason: str = "cancelled by request") -> ModelRow:
        """queued | running -> cancelled (its worker stops at its next progress step); a cancelled model is answered
        as it is. KeyError when unknown; ModelStateError when it ended otherwise."""
        self._set_if(
            and_(col(ModelRow.id) == model_id, col(ModelRow.status).in_(UNFINISHED)),
            status="cancelled",
            error=reason,
            finished_at=_now(),
        )
        row = self.get(model_id)
        if row is None:
            raise KeyError(model_id)
        if row.status != "cancelled":
            raise ModelStateError(
                "status", f"reward model {model_id} is {row.status}; only a queued or running model can be cancelled"
            )
        return row

    def remove(self, model_id: str) -> ModelRow:
        """Delete a model that is neither active nor queued or running, with its training set; the row deleted.

        KeyError when unknown; ModelStateError naming `active` (activate another model first) or `status` (cancel it
        first) otherwise. Its artifact files are the caller's to remove.
        """
        row = self.get(model_id)
        if row is None:
            raise KeyError(model_id)
        with self.session() as s:
            deleted = s.exec(
                delete(ModelRow).where(
                    col(ModelRow.id) == model_id,
                    col(ModelRow.active) == False,  # noqa: E712
                    col(ModelRow.status).not_in(UNFINISHED),
                )
            ).rowcount
            if deleted == 1:
                s.exec(delete(TrainingRowRow).where(col(TrainingRowRow.model_id) == model_id))
                s.exec(delete(TrainingSetRow).where(col(TrainingSetRow.model_id) == model_id))
            s.commit()
        if deleted == 1:
            return row
        now = self.get(model_id)
        if now is None:  # deleted by someone else meanwhile
            raise KeyError(model_id)
        if now.active:
            raise ModelStateError(
                "active", f"reward model {model_id} is the active {now.task} model: activate another one first"
            )
        raise ModelStateError(
            "status",
            f"reward model {model_id} is {now.status}: cancel it first (POST /v1/reward/models/{model_id}/cancel)",
        )

    def reap(self, stale_after_s: float, now: dt.datetime | None = None) -> tuple[ModelRow, ...]:
        """Fail every running model whose worker has been silent for `stale_after_s` ("worker lost: no heartbeat for
        N s"); the models failed. A redelivery of such a model's task may take it over and train it again."""
        now = now or _now()
        with self.session() as s:
            running = list(s.exec(select(ModelRow).where(ModelRow.status == "running")))
        reaped: list[ModelRow] = []
        for row in running:
            silent = row.silent_for(now)
            if silent < stale_after_s:
                continue
            seen = (
                col(ModelRow.heartbeat_at).is_(None)
                if row.heartbeat_at is None
                else col(ModelRow.heartbeat_at) <= row.heartbeat_at
            )
            error = f"{WORKER_LOST}: no heartbeat for {silent:.0f} s"
            if self._set_if(
                and_(self._mine(row.id, row.worker), seen), status="failed", error=error, finished_at=_now()
            ):
                logger.warning("reward model %s: %s (worker %s)", row.id, error, row.worker or "unknown")
                got = self.get(row.id)
                if got is not None:
                    reaped.append(got)
        return tuple(reaped)

    def activate(self, model_id: str) -> ModelRow:
        """Make a succeeded model the active one of its task (one active model per task)."""
        with self.session() as s:
            row = s.get(ModelRow, model_id)
            if row is None:
                raise KeyError(model_id)
            if row.status != "succeeded":
                raise ValueError(f"model {model_id} is {row.status}; only a succeeded model can be activated")
            for other in s.exec(select(ModelRow).where(ModelRow.task == row.task, ModelRow.active == True)):  # noqa: E712
                other.active = False
                s.add(other)
            row.active = True
            s.add(row)
            s.commit()
            s.refresh(row)
            return row

    def active(self, task: str) -> ModelRow | None:
        with self.session() as s:
            return s.exec(select(ModelRow).where(ModelRow.task == task, ModelRow.active == True)).first()  # noqa: E712
