"""What every service's `serve()` shares: uvicorn options."""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = ["fast_server_options"]


def fast_server_options() -> dict[str, Any]:
    """uvicorn's C HTTP parser and event loop when they are installed (uvicorn[standard]); its defaults otherwise.

    Access logs are off: request metrics live in /metrics, and a log line per request costs throughput.
    """
    options: dict[str, Any] = {"access_log": False}
    if importlib.util.find_spec("httptools") is not None:
        options["http"] = "httptools"
    if importlib.util.find_spec("uvloop") is not None:
        options["loop"] = "uvloop"
    return options
