"""Decoding and cross-field validation of Sessions, with errors that name the offending field."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from tacit.schemas.problem import RequestError, decode_error
from tacit.schemas.session import Session, Stream

__all__ = ["SessionError", "decode_session", "decode_sessions", "validate_session"]


class SessionError(RequestError, ValueError):
    """A session that breaks the contract; `field` is a JSON path like `responses[0].mouse.x`: 400 when it is not
    JSON at all (`malformed`), else 422."""

    def __init__(self, field: str, detail: str, code: str = "invalid") -> None:
        super().__init__(400 if code == "malformed" else 422, code, field, detail, message=f"{field}: {detail}")

    @classmethod
    def of(cls, err: Exception, target: Any = None) -> SessionError:
        """A decoding failure (tacit.schemas.problem.decode_error reads it, `target` the type decoded) as a
        SessionError."""
        error = decode_error(err, target)
        return cls(error.field, error.detail, error.code)

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "detail": self.detail}


_DECODER = msgspec.json.Decoder(Session)
_LIST_DECODER = msgspec.json.Decoder(list[Session])


def decode_session(body: bytes | str) -> Session:
    """Decode and fully validate one JSON session; raises SessionError."""
    try:
        session = _DECODER.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeError) as err:  # a ValidationError is a DecodeError
        raise SessionError.of(err, Session) from None
    validate_session(session)
    return session


def decode_sessions(body: bytes | str) -> list[Session]:
    """Decode and validate a JSON array of sessions; the field path names the failing item."""
    try:
        sessions = _LIST_DECODER.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeError) as err:
        raise SessionError.of(err, list[Session]) from None
    for i, session in enumerate(sessions):
        try:
            validate_session(session)
        except SessionError as err:
            raise SessionError(f"[{i}].{err.field}", err.detail, err.code) from None
    return sessions


def _int64(values: list[int], field: str) -> npt.NDArray[np.int64]:
    # JSON integers up to 2**64 - 1 decode fine but do not fit the int64 arrays used below.
    try:
        return np.asarray(values, dtype=np.int64)
    except OverflowError:
        i = next(i for i, v in enumerate(values) if not -(2**63) <= v < 2**63)
        raise SessionError(f"{field}[{i}]", "integer out of range", "out_of_range") from None


def _check_stream(stream: Stream, field: str, text_len: int) -> None:
    n = len(stream.x)
    columns: dict[str, Any] = {
        "y": stream.y,
        "char_index": stream.char_index,
        "window": stream.window,
        "t_page_ms": stream.t_page_ms,
        "t_epoch_ms": stream.t_epoch_ms,
        "head_in_box": stream.head_in_box,
    }
    for name, column in columns.items():
        if column is not None and len(column) != n:
            raise SessionError(f"{field}.{name}", f"has {len(column)} samples but x has {n}", "length_mismatch")
    for name in ("x", "y", "t_page_ms", "t_epoch_ms"):
        values = getattr(stream, name)
        if values is None:
            continue
        arr = np.asarray(values, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise SessionError(f"{field}.{name}[{bad[0]}]", "must be a finite number", "not_finite")
    t = np.asarray(stream.t_page_ms, dtype=np.float64)
    if t.size and t.min() < 0:
        raise SessionError(f"{field}.t_page_ms[{int(np.argmin(t))}]", "must be >= 0", "negative_time")
    reloads = _int64(stream.reload_at, f"{field}.reload_at")
    if reloads.size and (reloads.min() <= 0 or reloads.max() >= max(n, 1) or np.any(np.diff(reloads) <= 0)):
        raise SessionError(f"{field}.reload_at", "must be increasing sample indices in 1..n-1", "invalid")
    steps_back = np.flatnonzero(np.diff(t) < 0) + 1
    if steps_back.size:
        unmarked = np.setdiff1d(steps_back, reloads, assume_unique=True)
        if unmarked.size:
            i = int(unmarked[0])
            raise SessionError(
                f"{field}.t_page_ms[{i}]",
                "goes backwards without a page reload marker in reload_at",
                "time_backwards",
            )
    idx = _int64(stream.char_index, f"{field}.char_index")
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < -1:
            raise SessionError(f"{field}.char_index[{int(np.argmin(idx))}]", "must be -1 or >= 0", "out_of_range")
        if hi > text_len:
            raise SessionError(
                f"{field}.char_index[{int(np.argmax(idx))}]",
                f"{hi} is past the end of the response ({text_len} characters)",
                "out_of_range",
            )
    if stream.head_in_box is not None and len(stream.head_in_box):
        head = _int64(stream.head_in_box, f"{field}.head_in_box")
        bad = np.flatnonzero((head < -1) | (head > 1))
        if bad.size:
            raise SessionError(f"{field}.head_in_box[{bad[0]}]", "must be -1, 0 or 1", "out_of_range")


def validate_session(session: Session) -> None:
    """Checks msgspec cannot express: shape vs mode, consent, equal columns, time order, index range."""
    expected = 2 if session.mode == "pairwise" else 1
    if len(session.responses) != expected:
        raise SessionError(
            "responses",
            f"mode {session.mode!r} needs {expected} response(s), got {len(session.responses)}",
            "mode_mismatch",
        )
    if session.mode == "pairwise" and session.previous_response is not None:
        raise SessionError("previous_response", "only pointwise sessions have a previous response", "mode_mismatch")
    consent = session.consent
    for i, response in enumerate(session.responses):
        for modality in ("mouse", "gaze"):
            stream = getattr(response, modality)
            if stream is None:
                continue
            field = f"responses[{i}].{modality}"
            if not getattr(consent, modality):
                raise SessionError(field, f"{modality} stream sent without {modality} consent", "no_consent")
            if stream.head_in_box is not None and not consent.camera and any(v != -1 for v in stream.head_in_box):
                raise SessionError(f"{field}.head_in_box", "head position sent without camera consent", "no_consent")
            _check_stream(stream, field, len(response.text))
    for name, modality in (("viewport_mouse", "mouse"), ("viewport_gaze", "gaze")):
        viewport = getattr(session, name)
        if viewport is None:
            continue
        if not getattr(consent, modality):
            raise SessionError(name, f"{modality} stream sent without {modality} consent", "no_consent")
        n = len(viewport.x)
        for col in ("x", "y", "t_page_ms", "t_epoch_ms"):
            values = getattr(viewport, col)
            if values is not None and len(values) != n:
                raise SessionError(f"{name}.{col}", f"has {len(values)} samples but x has {n}", "length_mismatch")
            if values is not None:
                arr = np.asarray(values, dtype=np.float64)
                bad = np.flatnonzero(~np.isfinite(arr))
                if bad.size:
                    raise SessionError(f"{name}.{col}[{bad[0]}]", "must be a finite number", "not_finite")
    feedback = session.feedback
    if feedback is not None:
        allowed = {"pairwise": ("left", "right"), "pointwise": ("current", "previous")}[session.mode]
        if feedback.preference is not None and feedback.preference not in allowed:
            raise SessionError(
                "feedback.preference",
                f"{feedback.preference!r} is not valid for mode {session.mode!r} (use {' or '.join(allowed)})",
                "mode_mismatch",
            )
        if feedback.preference in ("current", "previous") and session.previous_response is None:
            raise SessionError("previous_response", "a current/previous preference needs the previous response")
        if len(feedback.likert) > len(session.responses):
            raise SessionError("feedback.likert", "has more entries than there are responses", "length_mismatch")
