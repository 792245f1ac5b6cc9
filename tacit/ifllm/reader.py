"""Read an IFLLM release folder (spec 1) into task recordings and per-question segments.

A *recording* is one worker x task folder: its rel_* files as columns. A *segment* is what one question
owns of it under the canonical assignment (`tacit.ifllm.matching.segment_boundaries`). Recordings are
read one task at a time, so the whole dataset never sits in memory, and tasks can be fanned out over
processes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tacit.ifllm.matching import segment_boundaries, tick_keys
from tacit.ifllm.rel import RelFile, read_rel
from tacit.ifllm.tables import Query, TaskRow, read_queries, read_tasks

__all__ = ["FILES", "Dataset", "Recording", "Segment", "TaskKey"]

#: (mode, side, modality) -> file stem, spec 1.5. Side "left" is response 1 (and the only box in pointwise).
FILES: dict[str, dict[tuple[str, str], str]] = {
    "pairwise": {
        ("left", "gaze"): "rel_gaze_one",
        ("right", "gaze"): "rel_gaze_two",
        ("left", "mouse"): "rel_mouse_left",
        ("right", "mouse"): "rel_mouse_right",
    },
    "pointwise": {("left", "gaze"): "rel_gaze", ("left", "mouse"): "rel_mouse"},
}

TaskKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Recording:
    """One worker x task folder: its rel files by (side, modality) and the questions asked there."""

    user_id: str
    task_id: str
    mode: str
    files: dict[tuple[str, str], RelFile]
    queries: list[Query]
    """Questions of this worker and task in asking order (query id: the server's insertion order)."""

    def side_text(self, query: Query, side: str) -> str | None:
        return query.response_1 if side == "left" else query.response_2

    @property
    def samples(self) -> int:
        return sum(len(f) for f in self.files.values())

    @property
    def skipped(self) -> int:
        return sum(f.skipped for f in self.files.values())

    def reference_order(self) -> list[Query]:
        """The reference's candidate order (spec 2.1): by client timestamp, unparseable timestamps dropped."""
        return sorted((q for q in self.queries if q.timestamp_ms is not None), key=lambda q: q.timestamp_ms or 0)

    def segments(self) -> list[Segment]:
        """One segment per question under the canonical assignment; unseen questions get empty segments."""
        keys = list(self.files)
        files = [self.files[k] for k in keys]
        texts = [[self.side_text(q, side) for q in self.queries] for side, _ in keys]
        starts, placeholders = segment_boundaries(files, texts)
        seen = np.flatnonzero(~np.isnan(starts))
        out = []
        for k, query in enumerate(self.queries):
            rows: dict[tuple[str, str], slice] = {}
            later = seen[seen > k]
            for key, rel in zip(keys, files, strict=True):
                if np.isnan(starts[k]):
                    rows[key] = slice(0, 0)
                    continue
                ticks = tick_keys(rel)
                begin = int(np.searchsorted(ticks, starts[k], side="left"))
                end = int(np.searchsorted(ticks, starts[later[0]], side="left")) if later.size else len(rel)
                rows[key] = slice(begin, max(begin, end))
            out.append(
                Segment(
                    recording=self,
                    query=query,
                    turn=k,
                    rows=rows,
                    placeholder=dict(zip(keys, placeholders, strict=True)),
                )
            )
        return out


@dataclass(frozen=True, slots=True)
class Segment:
    """The rows of each file that belong to one question, plus the placeholder mask per file."""

    recording: Recording
    query: Query
    turn: int
    rows: dict[tuple[str, str], slice]
    placeholder: dict[tuple[str, str], npt.NDArray[np.bool_]] = field(repr=False)

    @property
    def samples(self) -> int:
        return sum(s.stop - s.start for s in self.rows.values())

    @property
    def previous(self) -> Query | None:
        queries = self.recording.queries
        return queries[self.turn - 1] if self.turn > 0 else None


class Dataset:
    """An IFLLM release folder (the one holding `query_logs_table.csv` and `user_behavior/`)."""

    def __init__(self, root: Path | str, *, semantics: str = "lines") -> None:
        """`semantics`: how rel files are split into rows (see `tacit.ifllm.rel.read_rel`)."""
        self.semantics = semantics
        root = Path(root)
        if not (root / "query_logs_table.csv").exists() and (root / "ifllm" / "query_logs_table.csv").exists():
            root = root / "ifllm"
        if not (root / "query_logs_table.csv").exists():
            raise FileNotFoundError(f"{root} has no query_logs_table.csv: not an IFLLM release folder")
        self.root = root
        self.queries = read_queries(root)
        self._tasks: list[TaskRow] | None = None
        by_task: dict[TaskKey, list[Query]] = defaultdict(list)
        for q in self.queries:
            by_task[(q.user_id, q.task_id)].append(q)
        self.by_task = {k: sorted(v, key=lambda q: q.query_id) for k, v in by_task.items()}

    @property
    def tasks(self) -> list[TaskRow]:
        if self._tasks is None:
            self._tasks = read_tasks(self.root)
        return self._tasks

    def task_dirs(self) -> list[tuple[TaskKey, Path]]:
        """Behaviour folders that hold a recognised rel file set, sorted by (worker, task)."""
        base = self.root / "user_behavior"
        if not base.is_dir():
            return []
        return [
            ((worker.name, task.name), task)
            for worker in sorted(p for p in base.iterdir() if p.is_dir())
            for task in sorted(p for p in worker.iterdir() if p.is_dir())
            if self._mode_of(task) is not None
        ]

    @staticmethod
    def _mode_of(folder: Path) -> str | None:
        for mode, files in FILES.items():
            if all((folder / f"{stem}.csv").exists() for stem in files.values()):
                return mode
        return None

    def load(self, key: TaskKey, folder: Path | None = None) -> Recording:
        folder = folder or self.root / "user_behavior" / key[0] / key[1]
        mode = self._mode_of(folder)
        if mode is None:
            raise FileNotFoundError(f"{folder} holds no pairwise or pointwise rel file set")
        files = {k: read_rel(folder / f"{stem}.csv", self.semantics) for k, stem in FILES[mode].items()}
        return Recording(user_id=key[0], task_id=key[1], mode=mode, files=files, queries=self.by_task.get(key, []))

    def recordings(self) -> Iterator[Recording]:
        for key, folder in self.task_dirs():
            yield self.load(key, folder)

    def summary(self) -> dict[str, object]:
        """Counts from the tables and the behaviour folders (no trajectory parsing)."""
        pairwise = [q for q in self.queries if q.mode == "pairwise"]
        pointwise = [q for q in self.queries if q.mode == "pointwise"]
        dirs = self.task_dirs()
        with_behaviour = {k for k, _ in dirs}
        return {
            "questions": len(self.queries),
            "workers": len({q.user_id for q in self.queries}),
            "tasks": len(self.by_task),
            "pairwise": len(pairwise),
            "pairwise_labelled": sum(q.label is not None for q in pairwise),
            "pointwise": len(pointwise),
            "pointwise_labelled": sum(q.label is not None for q in pointwise),
            "behaviour_workers": len({k[0] for k in with_behaviour}),
            "behaviour_tasks": len(with_behaviour),
            "questions_with_behaviour": sum((q.user_id, q.task_id) in with_behaviour for q in self.queries),
            "rel_bytes": sum(p.stat().st_size for _, d in dirs for p in d.glob("rel_*.csv")),
        }
