"""Reward-model registry: one row per training run, with status, progress, scores and the active flag.

sqlmodel on SQLite by default (a file under the data home) or PostgreSQL (`TACIT_REWARD_DATABASE_URL`).
The pure training code never touches it; the Celery task and the HTTP edge do.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Field, Session, SQLModel, create_engine, select

__all__ = ["ModelRow", "Registry"]

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


class Registry:
    """Access to the registry tables (created on first use)."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"check_same_thread": False} if url.startswith("sqlite") else {}
        self.engine: Engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        table = ModelRow.__table__  # type: ignore[attr-defined]
        SQLModel.metadata.create_all(self.engine, tables=[table])

    def close(self) -> None:
        """Close pooled connections (tests, shutdown)."""
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def create(
        self, *, task: str, model_name: str, feature_set: str, spec: dict[str, Any], demo: bool = False
    ) -> ModelRow:
        row = ModelRow(
            id=uuid.uuid4().hex[:16],
            task=task,
            model_name=model_name,
            feature_set=feature_set,
            spec_json=json.dumps(spec, sort_keys=True),
            demo=demo,
        )
        with self.session() as s:
            s.add(row)
            s.commit()
            s.refresh(row)
        return row

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
