"""The error body every Tacit service answers with, the one error base behind it, and the one reading of a
body-decoding failure (msgspec's, or text that is not UTF-8, or JSON nested too deeply) as such an error."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from tacit.schemas.session import ID_PATTERN

__all__ = [
    "NESTED_TOO_DEEPLY",
    "Problem",
    "RequestError",
    "choices",
    "decode_body",
    "decode_error",
    "readable",
    "refuse_duplicate_keys",
]


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """Every 4xx/5xx answer: a stable `code`, the offending `field` (a JSON path into the body) and a `detail`."""

    code: str
    field: str
    detail: str


class RequestError(Exception):
    """A request the service refuses: the HTTP status, the Problem fields and optional response headers.

    The one error base: a service's own request errors subclass it (their constructors fix status and code), so
    the edge (tacit.edge) answers every one of them the same way. `message` is `str(error)` when not the detail.
    """

    def __init__(
        self,
        status: int,
        code: str,
        field: str,
        detail: str,
        headers: dict[str, str] | None = None,
        *,
        message: str | None = None,
    ) -> None:
        super().__init__(detail if message is None else message)
        self.status, self.code, self.field, self.detail = status, code, field, detail
        self.headers = headers or {}

    def problem(self) -> Problem:
        return Problem(code=self.code, field=self.field, detail=self.detail)


#: What a pattern mismatch says instead of the regex itself.
_PATTERNS = {
    f"Expected `str` matching regex {ID_PATTERN!r}": (
        "an id uses only ASCII letters, digits and _ - . : @, and does not start with a dot"
    ),
}
#: msgspec's answer to JSON nested deeper than the interpreter's recursion limit.
NESTED_TOO_DEEPLY = "JSON nested too deeply"


def readable(detail: str) -> str:
    """A msgspec validation message in words (a regex is replaced by the rule it encodes)."""
    return _PATTERNS.get(detail, detail)


#: Bodies up to this size are also checked for duplicate keys (control bodies: job specs, selections, tokens);
#: session bodies (megabytes) are not, a second parse would double their cost.
UNIQUE_KEYS_MAX_BYTES = 64 * 1024


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def refuse_duplicate_keys(body: bytes | str) -> None:
    """400 naming the key when a JSON object of `body` holds the same key twice (parsers disagree on which wins)."""
    try:
        json.loads(body, object_pairs_hook=_unique)
    except _DuplicateKeyError as err:
        raise RequestError(400, "malformed", err.key, f"duplicate key {err.key!r} in a JSON object") from None
    except (ValueError, RecursionError):  # not JSON at all: msgspec has said so already
        return


#: Where msgspec says a validation error is (`... - at `$.responses[0].text``), and the key a missing or unknown
#: field error names: such an error is reported at the object holding the key, the field named is the key itself.
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_NAMED_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `(?P<name>[^`]*)`")
#: A body whose top-level value is of the wrong kind (`[]` where an object is read): msgspec names no path.
_WRONG_KIND = re.compile(r"^Expected `[^`]+`, got `[^`]+`$")


#: msgspec's message for a value outside a Literal or an Enum.
_ENUM = re.compile(r"^Invalid enum value (?P<value>.*)$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|'[^']*'|\"[^\"]*\")\]")


def choices(annotation: Any) -> tuple[Any, ...]:
    """The values a Literal or Enum type (optional or not) allows, in declared order; empty for any other type."""
    try:
        info = msgspec.inspect.type_info(annotation)
    except (TypeError, ValueError):
        return ()
    return _choices(info)


def _choices(info: msgspec.inspect.Type) -> tuple[Any, ...]:
    kinds = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    for kind in kinds:
        if isinstance(kind, msgspec.inspect.LiteralType):
            return tuple(kind.values)
        if isinstance(kind, msgspec.inspect.EnumType):
            return tuple(member.value for member in kind.cls)
    return ()


def _at(info: msgspec.inspect.Type, path: str) -> msgspec.inspect.Type | None:
    """The type found at JSON path `path` (`.a[0].b`) of `info`, walking structs, containers and unions."""
    for match in _STEP.finditer(path):
        name = match.group(1)
        candidates = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
        found: msgspec.inspect.Type | None = None
        for kind in candidates:
            if name is not None and isinstance(kind, msgspec.inspect.StructType | msgspec.inspect.DataclassType):
                found = next((f.type for f in kind.fields if f.encode_name == name), None)
            elif isinstance(kind, msgspec.inspect.DictType):
                found = kind.value_type
            elif name is None and isinstance(kind, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
                found = kind.item_type
            elif name is None and isinstance(kind, msgspec.inspect.TupleType):
                index = int(match.group(2)) if match.group(2).isdigit() else -1
                found = kind.item_types[index] if 0 <= index < len(kind.item_types) else None
            if found is not None:
                break
        if found is None:
            return None
        info = found
    return info


def _allowed(target: Any, path: str) -> tuple[Any, ...]:
    if target is None:
        return ()
    try:
        info = _at(msgspec.inspect.type_info(target), f".{path}" if path and not path.startswith("[") else path)
    except (TypeError, ValueError):
        return ()
    return () if info is None else _choices(info)


def decode_error(err: Exception, target: Any = None) -> RequestError:
    """A failure to decode a body as the error every service answers: 422 `invalid` naming the field msgspec
    rejected (a JSON path such as `responses[0].mouse.x`), else 400 `malformed` at `$` (not JSON, or not even the
    kind of JSON value the route reads). With the decoded `target` type, a value outside a Literal or Enum is
    answered with the values the field allows."""
    if isinstance(err, msgspec.ValidationError):
        message = str(err)
        if _WRONG_KIND.match(message):
            return RequestError(400, "malformed", "$", f"malformed JSON: {message}")
        at = _AT.search(message)
        path = at.group("path").lstrip(".") if at else ""
        detail = message[: at.start()] if at else message
        named = _NAMED_FIELD.match(detail)
        if named is not None:
            path = f"{path}.{named.group('name')}" if path else named.group("name")
        if _ENUM.match(detail) and (allowed := _allowed(target, path)):
            detail = f"{detail}: expected one of: {', '.join(map(str, allowed))}"
        return RequestError(422, "invalid", path or "$", readable(detail))
    if isinstance(err, UnicodeError):  # a str holding lone surrogates (invalid UTF-8 bytes are a DecodeError)
        return RequestError(400, "malformed", "$", f"body is not valid UTF-8 text: {err}")
    if isinstance(err, RecursionError):
        return RequestError(400, "malformed", "$", NESTED_TOO_DEEPLY)
    if str(err) == "Input data was truncated":  # msgspec's words for an empty body, or one cut short
        return RequestError(
            400, "malformed", "$", "malformed JSON: the body is empty or ends early (a JSON body expected)"
        )
    return RequestError(400, "malformed", "$", f"malformed JSON: {err}")


def decode_body(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    """Decode a request body; 400 for malformed (or too deeply nested) JSON or a duplicate key in a small body,
    422 naming the field msgspec rejected."""
    try:
        value = decoder.decode(body)
    except (msgspec.DecodeError, UnicodeError, RecursionError) as err:  # a ValidationError is a DecodeError
        raise decode_error(err, decoder.type) from None
    if len(body) <= UNIQUE_KEYS_MAX_BYTES:
        refuse_duplicate_keys(body)
    return value
