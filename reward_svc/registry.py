"""Reward-model registry: one row per training run, with status, progress, scores and the active flag.

A model trained from stored sessions also has its training set here: one row per session (id, user, content
hash, label, the feature vector it was trained on and, once trained, its out-of-fold probability) and one
summary row (counts). sqlmodel on SQLite by default (a file under the data home) or PostgreSQL
(`TACIT_REWARD_DATABASE_URL`); tables are created on first use, so a new column is a new table, never an edit.
The pure training code never touches it; the Celery task and the HTTP edge do.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Column, Engine, delete, func
from sqlmodel import Field, Session, SQLModel, col, create_engine, select

__all__ = ["ModelRow", "Registry", "TrainingRowRow", "TrainingSetRow"]

STATES = ("queued", "running", "succeeded", "failed")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ModelRow(SQLModel, table=True):
    """A reward model: requested, being trained, trained (with its artifact) or failed."""

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

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(json.loads(self.metrics_json or "{}"))


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


class Registry:
    """Access to the registry tables (created on first use)."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"check_same_thread": False} if url.startswith("sqlite") else {}
        self.engine: Engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        tables = [t.__table__ for t in _TABLES]  # type: ignore[union-attr]
        SQLModel.metadata.create_all(self.engine, tables=tables)

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
