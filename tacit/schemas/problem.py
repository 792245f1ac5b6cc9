"""The error body every Tacit service answers with."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["Problem", "RequestError", "decode_body"]


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """Every 4xx/5xx answer: a stable `code`, the offending `field` (a JSON path into the body) and a `detail`."""

    code: str
    field: str
    detail: str


class RequestError(Exception):
    """A request the service refuses: the HTTP status, the Problem fields and optional response headers."""

    def __init__(self, status: int, code: str, field: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.field, self.detail = status, code, field, detail
        self.headers = headers or {}

    def problem(self) -> Problem:
        return Problem(code=self.code, field=self.field, detail=self.detail)


def decode_body(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    """Decode a request body; 400 for malformed JSON, 422 naming the field msgspec rejected."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as err:
        message = str(err)
        field = message.rsplit(" - at `$", 1)[-1].rstrip("`").lstrip(".") if " - at `$" in message else "$"
        raise RequestError(422, "invalid", field or "$", message.split(" - at ")[0]) from None
    except (msgspec.DecodeError, UnicodeError) as err:
        raise RequestError(400, "malformed", "$", f"malformed JSON: {err}") from None
