"""Feature tables from an IFLLM release: one row per question, tasks fanned out over processes.

`default` mode computes every feature per question over the question's own samples (the canonical
assignment); `reference` mode reproduces the released pipeline's tables (see feature_svc.features.reference).
Pointwise rows also carry `prev_*` copies of the previous question's features (same task), which the
pointwise feature sets need.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from feature_svc.features.compute import compute, from_segment, from_session
from feature_svc.features.reference import reference_rows
from tacit.ifllm.reader import Dataset, TaskKey
from tacit.schemas import Session
from tacit.schemas.session import label_of

__all__ = ["META_COLUMNS", "ExtractResult", "extract_table", "table_from_sessions", "write_table"]

Mode = Literal["default", "reference"]
META_COLUMNS = ["query_id", "user_id", "task_id", "mode", "label", "turn", "samples"]

_DATASET: Dataset | None = None


@dataclass(frozen=True, slots=True)
class ExtractResult:
    """The table and how it was made."""

    table: pa.Table
    rows: int
    samples: int
    skipped_rows: int
    seconds: float
    mode: str
    tasks: int


def _init(root: str, mode: str = "default") -> None:
    global _DATASET
    # The reference split rel files with Python's csv module; Tacit reads one sample per line.
    _DATASET = Dataset(root, semantics="csv" if mode == "reference" else "lines")


def _init_child(root: str, mode: str) -> None:
    # A child must die on the SIGTERM of Pool.terminate(); one that inherited a handler (Celery's warm shutdown
    # only sets a flag outside the worker's main process) made Pool.__exit__ wait forever.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _init(root, mode)


def _add_previous(rows: list[dict[str, Any]]) -> None:
    """Pointwise: copy each question's features under `prev_` into the next question of the task."""
    feature_names = [k for k in rows[0] if k not in META_COLUMNS and not k.startswith("prev_")] if rows else []
    previous: dict[str, Any] | None = None
    for row in rows:
        if row["mode"] == "pointwise" and previous is not None:
            for name in feature_names:
                if name in previous and f"prev_{name}" not in row:
                    row[f"prev_{name}"] = previous[name]
        previous = row


def _task_rows(job: tuple[TaskKey, str, Mode]) -> tuple[list[dict[str, Any]], int, int]:
    key, folder, mode = job
    assert _DATASET is not None
    rec = _DATASET.load(key, Path(folder))
    rows: list[dict[str, Any]] = []
    if mode == "default":
        for segment in rec.segments():
            q = segment.query
            row: dict[str, Any] = {
                "query_id": q.query_id,
                "user_id": rec.user_id,
                "task_id": rec.task_id,
                "mode": rec.mode,
                "label": q.label,
                "turn": segment.turn,
                "samples": segment.samples,
            }
            row |= compute(from_segment(segment))
            rows.append(row)
    else:
        turns = {q.query_id: k for k, q in enumerate(rec.queries)}
        for ref in reference_rows(rec):
            label = ref.pop("label")
            ref.pop("comparison_type")
            row = {
                "query_id": ref.pop("query_id"),
                "user_id": ref.pop("user_id"),
                "task_id": ref.pop("task_id"),
                "mode": rec.mode,
                "label": None if label == -1 else label,
            }
            row["turn"] = turns[int(row["query_id"])]
            row["samples"] = int(sum(float(v) for k, v in ref.items() if k.endswith("_data_points")))
            rows.append(row | ref)
        rows.sort(key=lambda r: r["turn"])
    _add_previous(rows)
    return rows, rec.samples, rec.skipped


def _jobs(dataset: Dataset, mode: Mode) -> list[tuple[TaskKey, str, Mode]]:
    dirs = dataset.task_dirs()
    # Largest folders first, so the last process is not left with one big task at the end.
    dirs.sort(key=lambda kv: -sum(p.stat().st_size for p in kv[1].glob("rel_*.csv")))
    return [(key, str(folder), mode) for key, folder in dirs]


def _pool_context() -> Any:
    """forkserver where there is one: children start from a fresh interpreter, not a copy of the caller (a Celery
    worker's signal handlers, locks held by its threads); the initializer resets SIGTERM for the others."""
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


def _iter_results(
    root: Path, jobs: list[tuple[TaskKey, str, Mode]], workers: int
) -> Iterator[tuple[list[dict[str, Any]], int, int]]:
    mode = jobs[0][2] if jobs else "default"
    if workers <= 1:
        _init(str(root), mode)
        yield from map(_task_rows, jobs)
        return
    with _pool_context().Pool(workers, initializer=_init_child, initargs=(str(root), mode)) as pool:
        yield from pool.imap_unordered(_task_rows, jobs, chunksize=1)


def extract_table(
    data: Path | str,
    *,
    mode: Mode = "default",
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> ExtractResult:
    """Features of every question with a behaviour folder; `progress(done, total)` after each task."""
    start = time.perf_counter()
    dataset = Dataset(data)
    jobs = _jobs(dataset, mode)
    rows: list[dict[str, Any]] = []
    samples = skipped = 0
    for done, (task_rows, task_samples, task_skipped) in enumerate(_iter_results(dataset.root, jobs, workers), 1):
        rows.extend(task_rows)
        samples += task_samples
        skipped += task_skipped
        if progress is not None:
            progress(done, len(jobs))
    rows.sort(key=lambda r: (r["user_id"], r["task_id"], r["turn"]))
    table = _to_table(rows)
    return ExtractResult(
        table=table,
        rows=table.num_rows,
        samples=samples,
        skipped_rows=skipped,
        seconds=time.perf_counter() - start,
        mode=mode,
        tasks=len(jobs),
    )


def table_from_sessions(sessions: list[Session]) -> pa.Table:
    """The extractor's table for wire Sessions (stored or simulated): same columns, same `prev_*` rule."""
    rows: list[dict[str, Any]] = []
    for k, session in enumerate(sessions):
        preference = session.feedback.preference if session.feedback else None
        row: dict[str, Any] = {
            "query_id": k if session.query_id is None or not session.query_id.isdigit() else int(session.query_id),
            "user_id": session.user_id,
            "task_id": session.task_id,
            "mode": session.mode,
            "label": label_of(preference),
            "turn": session.turn if session.turn is not None else 0,
        }
        obs = from_session(session)
        row["samples"] = obs.samples
        rows.append(row | compute(obs))
    rows.sort(key=lambda r: (r["user_id"], r["task_id"], r["turn"]))
    for _, group in _by_task(rows):
        _add_previous(group)
    return _to_table(rows)


def _by_task(rows: list[dict[str, Any]]) -> Iterator[tuple[tuple[str, str], list[dict[str, Any]]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["user_id"], row["task_id"]), []).append(row)
    yield from groups.items()


def _to_table(rows: list[dict[str, Any]]) -> pa.Table:
    names: dict[str, None] = dict.fromkeys(META_COLUMNS)
    for row in rows:
        names.update(dict.fromkeys(row))
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for row in rows:
        for n in names:
            columns[n].append(row.get(n))
    arrays = {}
    for n, values in columns.items():
        if n in ("user_id", "task_id", "mode"):
            arrays[n] = pa.array(values, type=pa.string())
        elif n in ("query_id", "label", "turn", "samples"):
            arrays[n] = pa.array(values, type=pa.int64())
        else:
            arrays[n] = pa.array(
                [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values],
                type=pa.float64(),
            )
    return pa.table(arrays)


def write_table(result: ExtractResult, out: Path | str) -> Path:
    """Write parquet (`.parquet`) or CSV (anything else); metadata records the mode."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = result.table.replace_schema_metadata({"tacit.extraction_mode": result.mode})
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".parquet":
        pq.write_table(table, tmp)
    else:
        pacsv.write_csv(table, tmp)
    tmp.replace(out)  # never leave a half-written table behind
    return out
