"""Feature tables -> model inputs: one task mode, one feature set, labelled rows, groups and provenance hash."""

# ruff: noqa: N803, N806  (scikit-learn's convention: X is the feature matrix)

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "META_COLUMNS",
    "TaskData",
    "available_features",
    "data_hash",
    "frame_from_vectors",
    "load_frame",
    "task_data",
    "with_unrecorded_questions",
]

META_COLUMNS = ("query_id", "user_id", "task_id", "mode", "label", "turn", "samples")
TASKS = ("pairwise", "pointwise")


def load_frame(
    data: Path | str,
    feature_mode: str = "default",
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Extract the feature table of an IFLLM folder (or read a written .parquet/.csv table) as a DataFrame."""
    path = Path(data)
    if path.is_file():
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            frame = table.to_pandas()
            written = (table.schema.metadata or {}).get(b"tacit.extraction_mode")
            if written is not None:
                frame.attrs["feature_mode"] = written.decode()
            return frame
        return pd.read_csv(path)
    from feature_svc.extract import extract_table

    result = extract_table(path, mode=feature_mode, workers=workers, progress=progress)  # type: ignore[arg-type]
    frame = result.table.to_pandas()
    frame.attrs["feature_mode"] = feature_mode  # what made the table, so a model can refuse the other mode
    return frame


def with_unrecorded_questions(frame: pd.DataFrame, data: Path | str) -> pd.DataFrame:
    """`frame` plus a row for every question of the IFLLM folder `data` that has none (its task has no behaviour
    folder, or none could be matched to it): ids, mode, label and turn from the query log, `samples` 0 and every
    feature missing. Scoring such a row abstains (`no_behaviour_samples`), yet it still gets the population
    probability of a session without behaviour and, when the user gave labels, their adaptation: one row per
    question, as `tacit reward predict` promises. A feature table (a file) is returned unchanged.
    """
    path = Path(data)
    if path.is_file():
        return frame
    from tacit.ifllm.reader import Dataset

    dataset = Dataset(path)
    have = set(frame["query_id"].astype(np.int64).tolist()) if len(frame) else set()
    rows = []
    for (user, task), queries in dataset.by_task.items():
        for turn, q in enumerate(queries):
            if q.query_id in have:
                continue
            rows.append(
                {
                    "query_id": q.query_id,
                    "user_id": user,
                    "task_id": task,
                    "mode": q.mode,
                    "label": q.label,
                    "turn": turn,
                    "samples": 0,
                }
            )
    if not rows:
        return frame
    extra = pd.DataFrame(rows)
    for column in ("label", "turn", "samples", "query_id"):
        if column in frame:
            extra[column] = extra[column].astype(frame[column].dtype if column != "label" else "float64")
    out = pd.concat([frame, extra], ignore_index=True, sort=False)
    out.attrs = dict(frame.attrs)
    return out


def frame_from_vectors(
    meta: list[dict[str, Any]], names: list[str], values: list[list[float]], mode: str
) -> pd.DataFrame:
    """A feature table (META_COLUMNS, then `names`) from served feature vectors of one mode.

    `meta` rows give user_id, task_id, label, turn and samples; query_id is the row's position, so a training
    result maps back to the row it came from.
    """
    if len(meta) != len(values):
        raise ValueError(f"{len(meta)} meta rows but {len(values)} vectors")
    columns: dict[str, Any] = {
        "query_id": np.arange(len(meta), dtype=np.int64),
        "user_id": [str(m["user_id"]) for m in meta],
        "task_id": [str(m.get("task_id", "")) for m in meta],
        "mode": [mode] * len(meta),
        "label": pd.array([m.get("label") for m in meta], dtype="Int64"),
        "turn": np.asarray([int(m.get("turn") or 0) for m in meta], dtype=np.int64),
        "samples": np.asarray([int(m.get("samples") or 0) for m in meta], dtype=np.int64),
    }
    matrix = np.asarray(values, dtype=np.float64).reshape(len(meta), len(names))
    features = pd.DataFrame(matrix, columns=names)
    return pd.concat([pd.DataFrame(columns), features], axis=1)


def available_features(frame: pd.DataFrame, task: str) -> list[str]:
    """The columns the extractor fills for `task` rows, in table order (what the `all` set means for a table)."""
    rows = frame[frame["mode"] == task]
    names = [c for c in frame.columns if c not in META_COLUMNS and rows[c].notna().any()]
    if task == "pairwise":
        names = [c for c in names if not c.startswith("prev_")]
    return names


@dataclass(frozen=True)
class TaskData:
    """The rows of one task mode as a model sees them: X in feature-set order, y, worker groups and meta."""

    task: str
    feature_set: str
    feature_set_version: str
    feature_mode: str
    names: list[str]
    X: npt.NDArray[np.float64]
    y: npt.NDArray[np.int64] | None
    meta: pd.DataFrame
    frame: pd.DataFrame = field(repr=False)

    @property
    def groups(self) -> npt.NDArray[Any]:
        return np.asarray(self.meta["user_id"].to_numpy())

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    def subset(self, mask: npt.NDArray[np.bool_]) -> TaskData:
        return TaskData(
            task=self.task,
            feature_set=self.feature_set,
            feature_set_version=self.feature_set_version,
            feature_mode=self.feature_mode,
            names=self.names,
            X=self.X[mask],
            y=None if self.y is None else self.y[mask],
            meta=self.meta[mask].reset_index(drop=True),
            frame=self.frame[mask].reset_index(drop=True),
        )

    def hash(self) -> str:
        return data_hash(self.meta["query_id"].to_numpy(), self.X)


def task_data(
    frame: pd.DataFrame,
    task: str,
    feature_set: str,
    *,
    feature_mode: str = "default",
    labelled_only: bool = True,
) -> TaskData:
    """Select `task` rows and the feature set's columns; unlabelled rows dropped unless `labelled_only` is False.

    Raises KeyError naming the feature-set columns the table lacks.
    """
    from feature_svc.features.sets import get_feature_set

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    fs = get_feature_set(feature_set)
    available = available_features(frame, task)
    names = fs.names(task, available)
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise KeyError(f"feature set {feature_set!r} needs columns the table lacks: {', '.join(missing[:5])}")
    rows = frame[frame["mode"] == task]
    if labelled_only:
        rows = rows[rows["label"].notna()]
    # A stable row order (query id) makes folds and the data hash independent of extraction order.
    rows = rows.sort_values("query_id", kind="stable").reset_index(drop=True)
    X = rows[names].to_numpy(dtype=np.float64, na_value=np.nan)
    labels = rows["label"]
    y = labels.to_numpy(dtype=np.int64) if labels.notna().all() and len(labels) else None
    return TaskData(
        task=task,
        feature_set=fs.id,
        feature_set_version=fs.version(task, available),
        feature_mode=feature_mode,
        names=names,
        X=X,
        y=y,
        meta=rows[list(META_COLUMNS)].copy(),
        frame=rows,
    )


def data_hash(query_ids: npt.NDArray[Any], X: npt.NDArray[np.float64]) -> str:
    """sha256 over the sorted query ids and the feature matrix bytes (rows in query-id order)."""
    order = np.argsort(np.asarray(query_ids, dtype=np.int64), kind="stable")
    digest = hashlib.sha256()
    digest.update(np.asarray(query_ids, dtype=np.int64)[order].tobytes())
    digest.update(np.ascontiguousarray(np.asarray(X, dtype=np.float64)[order]).tobytes())
    return digest.hexdigest()
