"""Building small IFLLM folders in tests (the release's own layout, never its data)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from tacit.ifllm.tables import QUERY_LOG_COLUMNS

__all__ = ["write_query_log"]


def write_query_log(root: Path, rows: Iterable[Sequence[object]]) -> Path:
    """`root/query_logs_table.csv` with the release's header and `rows` (values in `QUERY_LOG_COLUMNS` order);
    creates `root` if needed and returns it."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "query_logs_table.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(QUERY_LOG_COLUMNS)
        writer.writerows(rows)
    return root
