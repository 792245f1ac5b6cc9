"""Where the running `tacit up` stacks are, for commands that do not know their home (`tacit keys`).

Each `tacit up` leaves a pointer `up-<pid>.json` (0600, in a 0700 folder) in `$XDG_RUNTIME_DIR/tacit`, or in
`~/.local/share/tacit/stacks` where there is no runtime folder, and removes it when it stops. A pointer names the
stack's home, its gateway port and the database URL its gateway uses (possibly with a password, hence 0600). One
whose `tacit up` is gone (pid dead, or `<home>/up.json` now names another pid) is stale: ignored and removed.

This is a launcher's helper: it reads the process environment (`HOME`, `XDG_RUNTIME_DIR`) only through the
mapping its callers pass.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tacit.settings import data_home

__all__ = [
    "StackPointer",
    "default_home",
    "pointer_dir",
    "remove_pointer",
    "running_pid",
    "running_stacks",
    "write_pointer",
]


@dataclass(frozen=True)
class StackPointer:
    """A running `tacit up`: its pid, home, gateway port and gateway database."""

    pid: int
    home: Path
    gateway_port: int
    database_url: str

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"


def pointer_dir(environ: Mapping[str, str]) -> Path:
    """`$XDG_RUNTIME_DIR/tacit` when that folder exists, else `~/.local/share/tacit/stacks`."""
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "tacit"
    return default_home(environ) / "stacks"


def default_home(environ: Mapping[str, str]) -> Path:
    """The data home when TACIT_HOME is not set (`~/.local/share/tacit`, `~` from `environ`'s HOME)."""
    if environ.get("HOME"):
        return Path(environ["HOME"]) / ".local" / "share" / "tacit"
    return data_home({})


def running_pid(up_json: Path) -> int | None:
    """The pid of a live `tacit up` that wrote `up_json` (not this process), if any."""
    try:
        pid = int(json.loads(up_json.read_text())["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if pid != os.getpid() else None


def write_pointer(environ: Mapping[str, str], pointer: StackPointer) -> Path:
    """Leave the pointer of this stack (0600, written whole: a reader never sees half of it); returns its path."""
    folder = pointer_dir(environ)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"up-{pointer.pid}.json"
    tmp = folder / f".up-{pointer.pid}.json.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    text = json.dumps(
        {
            "pid": pointer.pid,
            "home": str(pointer.home),
            "gateway_port": pointer.gateway_port,
            "database_url": pointer.database_url,
        }
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    tmp.replace(path)
    return path


def remove_pointer(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _read(path: Path) -> StackPointer | None:
    try:
        raw = json.loads(path.read_text())
        return StackPointer(
            pid=int(raw["pid"]),
            home=Path(raw["home"]),
            gateway_port=int(raw["gateway_port"]),
            database_url=str(raw["database_url"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_stacks(environ: Mapping[str, str]) -> list[StackPointer]:
    """The live stacks' pointers, oldest pid first; stale pointers are removed on the way."""
    folder = pointer_dir(environ)
    found: list[StackPointer] = []
    for path in sorted(folder.glob("up-*.json")) if folder.is_dir() else []:
        pointer = _read(path)
        if pointer is not None and running_pid(pointer.home / "up.json") == pointer.pid:
            found.append(pointer)
        else:  # its tacit up is gone (or its pid now belongs to another process): nobody else will remove it
            remove_pointer(path)
    return sorted(found, key=lambda p: p.pid)
