"""The three IFLLM tables (spec 1.2 to 1.4): the query log, tasks and worker records."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["QUERY_LOG_COLUMNS", "Query", "TaskRow", "read_queries", "read_tasks"]

#: The header of `query_logs_table.csv` in the release (spec 1.2), in file order: the columns `read_queries` reads.
QUERY_LOG_COLUMNS = (
    "query_ID",
    "user_id",
    "task_id",
    "user_query",
    "llm_response_1",
    "llm_response_2",
    "llm_name_1",
    "llm_name_2",
    "likert_1",
    "likert_2",
    "preference",
    "adjustment",
    "query_timestamp",
)

PLACEHOLDER = (
    "After you type your question, please wait patiently. It might take up to 1 minute for AI to finish "
    "generating their answer. The AI's response will show up here."
)


@dataclass(frozen=True, slots=True)
class Query:
    """One row of `query_logs_table.csv`: a question and the answer(s) shown for it."""

    query_id: int
    user_id: str
    task_id: str
    query: str
    response_1: str
    response_2: str | None
    model_1: str | None
    model_2: str | None
    likert_1: int | None
    likert_2: int | None
    preference: int | None
    """Raw value: pairwise 1 (left) / 2 (right); pointwise 1 (current better) / 0 (previous better)."""
    adjustment: int | None
    timestamp_ms: int | None
    """`query_timestamp` as epoch ms; None when unparseable (e.g. "0000-00-00 00:00:00")."""

    @property
    def mode(self) -> str:
        return "pairwise" if (self.response_2 or self.model_2) else "pointwise"

    @property
    def label(self) -> int | None:
        """Binary label: pairwise 1 = right preferred; pointwise 1 = current preferred; None if unlabelled."""
        if self.preference is None:
            return None
        if self.mode == "pairwise":
            return {1: 0, 2: 1}.get(self.preference)
        return {0: 0, 1: 1}.get(self.preference)


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One row of `task_table.csv` (worker x topic)."""

    user_id: str
    task_id: str
    accuracy: float | None
    finished: str | None
    domain: str


def _number(text: str | None) -> int | None:
    """'2.0' -> 2: the release writes integers as floats (pitfall P4); empty / NULL -> None."""
    if text is None:
        return None
    text = text.strip()
    if not text or text.upper() == "NULL":
        return None
    try:
        return int(float(text))
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    if text is None or text in ("", "NULL"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _text(text: str | None) -> str | None:
    if text is None or text == "" or text == "NULL":
        return None
    return text


def _timestamp_ms(text: str) -> int | None:
    try:
        moment = dt.datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return int(moment.timestamp() * 1000)


def _newlines(text: str) -> str:
    # The release stores a few answers with CRLF; pandas (the reference) and the browser page both see LF.
    return text.replace("\r\n", "\n")


def _rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


def read_queries(root: Path | str) -> list[Query]:
    """All rows of the query log, in file order."""
    queries = []
    for row in _rows(Path(root) / "query_logs_table.csv"):
        query_id = _number(row.get("query_ID"))
        if query_id is None:
            continue
        queries.append(
            Query(
                query_id=query_id,
                user_id=row["user_id"].strip(),
                task_id=str(_number(row["task_id"]) if _number(row["task_id"]) is not None else row["task_id"]),
                query=_newlines(row.get("user_query") or ""),
                response_1=_newlines(row.get("llm_response_1") or ""),
                response_2=_text(_newlines(row.get("llm_response_2") or "")),
                model_1=_text((row.get("llm_name_1") or "").strip()),
                model_2=_text((row.get("llm_name_2") or "").strip()),
                likert_1=_number(row.get("likert_1")),
                likert_2=_number(row.get("likert_2")),
                preference=_number(row.get("preference")),
                adjustment=_number(row.get("adjustment")),
                timestamp_ms=_timestamp_ms(row.get("query_timestamp") or ""),
            )
        )
    return queries


def read_tasks(root: Path | str) -> list[TaskRow]:
    """All rows of the task table."""
    path = Path(root) / "task_table.csv"
    if not path.exists():
        return []
    return [
        TaskRow(
            user_id=row["user_id"].strip(),
            task_id=str(row["task_id"]).strip(),
            accuracy=_float(row.get("accuracy")),
            finished=_text((row.get("finished") or "").strip()),
            domain=row.get("domain") or "",
        )
        for row in _rows(path)
    ]
