"""Server-side paths a request may name (an IFLLM folder to import, a folder or table to train on).

Only paths inside the configured data roots (`TACIT_GATEWAY_DATA_ROOTS`) are read. Outside them the answer is the
same whether the path exists or not ("not an allowed data folder"), so a key cannot probe the server's files.
An empty list means no restriction, for a development machine only: `tacit up` names its data folders and the
compose deployment names `/data`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tacit.schemas.problem import RequestError

__all__ = ["NOT_ALLOWED", "allowed_path"]

NOT_ALLOWED = "not an allowed data folder"


def allowed_path(raw: str, roots: Sequence[str], field: str) -> Path:
    """`raw` resolved (symbolic links and `..` followed) when it lies inside a root; else 422 naming `field`."""
    if not roots:
        return Path(raw)
    if "\x00" in raw:
        raise RequestError(422, "not_allowed", field, NOT_ALLOWED)
    path = Path(os.path.realpath(raw))
    for root in roots:
        base = Path(os.path.realpath(root))
        if path == base or base in path.parents:
            return path
    raise RequestError(422, "not_allowed", field, NOT_ALLOWED)
