"""What the OpenAPI schema says a route answers: its success body and the Problem of every error status.

Handlers return pre-encoded bytes (`Response[bytes]`), from which litestar would document a JSON string; these
specs document the real bodies instead, so clients and the schemathesis fuzz tests can check answers against
the schema.
"""

from __future__ import annotations

from typing import Any

from litestar.openapi import ResponseSpec

from tacit.schemas.problem import Problem

__all__ = ["ERROR_STATUSES", "documented"]

#: Statuses an API route may answer besides success, always with a Problem body.
ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 415, 422, 429, 431, 502, 503)


def documented(ok: Any, *success: int, media_type: str = "application/json") -> dict[int, ResponseSpec]:
    """`responses=` for a route: `ok` for each success status (200 when none given), a Problem for each error."""
    specs = {
        status: ResponseSpec(data_container=Problem, generate_examples=False, description="A Problem")
        for status in ERROR_STATUSES
    }
    for status in success or (200,):
        specs[status] = ResponseSpec(
            data_container=ok, generate_examples=False, media_type=media_type, description="Success"
        )
    return specs
