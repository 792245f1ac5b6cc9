"""Prometheus' own binaries for the monitoring tests: Debian's `prometheus` package, installed when missing."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def _machine_lock(name: str) -> Iterator[None]:
    """One installer at a time on this machine (pytest-xdist workers race for dpkg's lock otherwise)."""
    with (Path(tempfile.gettempdir()) / name).open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _apt_install(package: str) -> str | None:
    """Install a Debian package; None on success, else why not."""
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    if os.geteuid() != 0:
        return "installing needs root (apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in ([], ["update"]):
        if attempt:
            subprocess.run(["apt-get", "-q", "update"], env=env, capture_output=True, timeout=300, check=False)
        done = subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode == 0:
            return None
    return f"apt-get install {package} failed: {done.stderr.strip()[-300:]}"


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        with _machine_lock("tacit-apt.lock"):
            found = shutil.which(name)
            if found is None:
                why = _apt_install("prometheus")
                found = shutil.which(name)
                if found is None:
                    pytest.skip(f"{name} is not installed and Debian's prometheus package could not be: {why}")
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    return _binary("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return _binary("prometheus")
