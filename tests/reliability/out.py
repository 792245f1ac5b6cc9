"""The JSON fragments the reliability tests leave for docs/reliability.md (see the package docstring)."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["write_fragment"]


def write_fragment(name: str, data: dict[str, Any]) -> Path | None:
    """Merge `data` into `<TACIT_RELIABILITY_OUT>/<name>.json`; None when the variable is unset.

    Tests of one module may run in different xdist workers: the read-merge-write holds a lock.
    """
    out = os.environ.get("TACIT_RELIABILITY_OUT")
    if not out:
        return None
    path = Path(out) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = json.loads(path.read_text()) if path.exists() else {}
        merged.update(data)
        path.write_text(json.dumps(merged, indent=2, sort_keys=True, default=str) + "\n")
    return path
