"""The error body every Tacit service answers with."""

from __future__ import annotations

import msgspec

__all__ = ["Problem"]


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """Every 4xx/5xx answer: a stable `code`, the offending `field` (a JSON path into the body) and a `detail`."""

    code: str
    field: str
    detail: str
