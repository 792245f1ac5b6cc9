"""How a Session is stored: consent-stripped, canonically encoded, hashed and compressed.

The canonical encoding is the Session's JSON with object keys sorted and `null` members dropped (every
optional field of the contract defaults to None, so it still decodes as the same Session). A field added
later with a None default therefore leaves the hash of an old session unchanged, and a re-post after an
upgrade is still recognised as the same content.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

import msgspec

from tacit.schemas.session import Response, Session, Stream
from tacit.schemas.session import label_of as preference_class

__all__ = [
    "Prepared",
    "decode_payload",
    "decode_text",
    "label_of",
    "prepare",
    "sample_count",
    "strip_unconsented",
]

#: zlib level 1: ~3 ms for a 2000-sample session, 10 % larger than level 6 at a third of the time.
ZLIB_LEVEL = 1

_DECODER = msgspec.json.Decoder(Session)


def _strip_stream(stream: Stream | None, camera: bool) -> Stream | None:
    if stream is None or camera or stream.head_in_box is None:
        return stream
    return msgspec.structs.replace(stream, head_in_box=None)


def strip_unconsented(session: Session) -> Session:
    """The session without any signal its consent does not cover (mouse, gaze streams; webcam head flags)."""
    consent = session.consent
    responses = []
    for response in session.responses:
        mouse = _strip_stream(response.mouse, consent.camera) if consent.mouse else None
        gaze = _strip_stream(response.gaze, consent.camera) if consent.gaze else None
        if mouse is not response.mouse or gaze is not response.gaze:
            response = msgspec.structs.replace(response, mouse=mouse, gaze=gaze)
        responses.append(response)
    changes: dict[str, Any] = {}
    if any(new is not old for new, old in zip(responses, session.responses, strict=True)):
        changes["responses"] = responses
    if not consent.mouse and session.viewport_mouse is not None:
        changes["viewport_mouse"] = None
    if not consent.gaze:
        # Calibration accuracy is a measurement of the gaze tracker: it goes with the gaze.
        if session.viewport_gaze is not None:
            changes["viewport_gaze"] = None
        if session.calibration_accuracy is not None:
            changes["calibration_accuracy"] = None
    return msgspec.structs.replace(session, **changes) if changes else session


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _drop_nulls(item) for key, item in value.items() if item is not None}
    # Only lists of objects need walking; the long sample columns are lists of numbers or strings.
    if isinstance(value, list) and value and isinstance(value[0], dict | list):
        return [_drop_nulls(item) for item in value]
    return value


def canonical_json(session: Session) -> bytes:
    """Sorted keys, no null members: the bytes that are hashed (and stored, compressed)."""
    return msgspec.json.encode(_drop_nulls(msgspec.to_builtins(session)), order="sorted")


def label_of(session: Session) -> int | None:
    """Explicit preference as a label: pairwise right=1/left=0, pointwise current=1/previous=0."""
    if session.feedback is None or session.feedback.preference is None:
        return None
    return preference_class(session.feedback.preference)


def sample_count(session: Session) -> int:
    """Samples over all response streams (mouse and gaze) that are kept."""
    return sum(
        len(stream.t_page_ms)
        for response in session.responses
        for stream in (response.mouse, response.gaze)
        if stream is not None
    )


class Prepared(msgspec.Struct, frozen=True, kw_only=True):
    """A session ready to be written: the stripped session, its compressed bytes and their hash."""

    session: Session
    payload: bytes
    sha256: str
    label: int | None
    samples: int


def prepare(session: Session) -> Prepared:
    """Strip unconsented signals, encode canonically, hash and compress (CPU only, no database)."""
    kept = strip_unconsented(session)
    raw = canonical_json(kept)
    return Prepared(
        session=kept,
        payload=zlib.compress(raw, ZLIB_LEVEL),
        sha256=hashlib.sha256(raw).hexdigest(),
        label=label_of(kept),
        samples=sample_count(kept),
    )


def decode_payload(payload: bytes) -> Session:
    """The stored Session back from its compressed canonical JSON."""
    return _DECODER.decode(zlib.decompress(payload))


class _TextResponse(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    model: str | None = None


def _field_spec(field: msgspec.structs.FieldInfo) -> tuple[Any, ...]:
    if field.default is not msgspec.NODEFAULT:
        return (field.name, field.type, field.default)
    if field.default_factory is not msgspec.NODEFAULT:
        return (field.name, field.type, msgspec.field(default_factory=field.default_factory))
    return (field.name, field.type)


_STREAM_FIELDS = ("responses", "viewport_mouse", "viewport_gaze")
_TEXT_FIELDS = [f for f in msgspec.structs.fields(Session) if f.name not in _STREAM_FIELDS]
# Session without its streams: msgspec skips the unknown stream arrays while decoding instead of building them
_TextSession = msgspec.defstruct(
    "_TextSession",
    [*(_field_spec(f) for f in _TEXT_FIELDS), ("responses", list[_TextResponse])],
    kw_only=True,
    frozen=True,
)
_TEXT_DECODER = msgspec.json.Decoder(_TextSession)


def decode_text(payload: bytes) -> Session:
    """The stored Session without its trajectories (texts, ids, feedback): for pairs and listings, a fraction of
    the memory and time of `decode_payload`."""
    text: Any = _TEXT_DECODER.decode(zlib.decompress(payload))  # a struct made by defstruct: fields untyped
    responses = [Response(text=r.text, model=r.model) for r in text.responses]
    return Session(**{f.name: getattr(text, f.name) for f in _TEXT_FIELDS}, responses=responses)
