"""Locating and unpacking an IFLLM release archive (the dev subset ships as `ifllm-dev.tar.xz`)."""

from __future__ import annotations

import fcntl
import shutil
import tarfile
import tempfile
from pathlib import Path

__all__ = ["find_release", "find_shared", "unpack_release"]


def find_release(root: Path) -> Path | None:
    """The folder holding `query_logs_table.csv`: `root` itself or one level down; None when neither."""
    if not root.is_dir():
        return None
    for candidate in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        if (candidate / "query_logs_table.csv").is_file():
            return candidate
    return None


def find_shared(start: Path) -> Path | None:
    """The team's `shared/` folder beside `start` or one of its ancestors (it holds `ifllm/` and `spec/`)."""
    for parent in (start, *start.parents):
        candidate = parent / "shared"
        if (candidate / "ifllm").is_dir() or (candidate / "spec").is_dir():
            return candidate
    return None


def unpack_release(tarball: Path, cache: Path) -> Path:
    """Unpack `tarball` into `cache` once and return the release folder.

    Atomic (staged, then renamed) and locked, so concurrent test workers or an interrupted run never see half
    a folder.
    """
    if (found := find_release(cache)) is not None:
        return found
    cache.parent.mkdir(parents=True, exist_ok=True)
    with (cache.parent / f".{cache.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (found := find_release(cache)) is not None:
            return found
        staging = Path(tempfile.mkdtemp(prefix=f"{cache.name}.", dir=cache.parent))
        try:
            with tarfile.open(tarball, "r:*") as archive:
                archive.extractall(staging, filter="data")
            if cache.exists():
                shutil.rmtree(cache)
            staging.rename(cache)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    found = find_release(cache)
    if found is None:
        raise FileNotFoundError(f"{tarball} holds no query_logs_table.csv")
    return found
