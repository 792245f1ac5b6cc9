"""The reading-session wire contract: one Session = one question and the answers shown for it.

Trajectories are columnar (one list per field) so a 100k-sample session decodes in milliseconds.
Structural checks (types, sizes) are done by msgspec at decode time; the cross-field checks that
msgspec cannot express (equal column lengths, finite numbers, time order, character index inside
the response) are done by :func:`tacit.schemas.validate.validate_session`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = [
    "ID_PATTERN",
    "MAX_SAMPLES",
    "MAX_TEXT_CHARS",
    "Consent",
    "Feedback",
    "Response",
    "Session",
    "Stream",
    "ViewportStream",
    "label_of",
    "preferred_side",
]

#: Upper bound on samples per stream (about 2 hours at 13.5 Hz); larger bodies are refused.
MAX_SAMPLES = 200_000
#: Upper bound on a response or query text, in characters.
MAX_TEXT_CHARS = 100_000
#: Upper bound on an id string.
MAX_ID_CHARS = 128
#: The alphabet of ids: ASCII letters, digits and `_ - . : @`, not starting with a dot (so never `.` or `..`) and
#: never a `/`: every stored id is one URL path segment that routes back to it (read, erase).
ID_PATTERN = r"^[A-Za-z0-9_:@-][A-Za-z0-9_.:@-]*$"

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]
Floats = Annotated[list[float], msgspec.Meta(max_length=MAX_SAMPLES)]
Ints = Annotated[list[int], msgspec.Meta(max_length=MAX_SAMPLES)]
Windows = Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=MAX_SAMPLES)]


class Stream(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Samples of one modality (mouse or gaze) relative to one response box, one entry per sampler tick."""

    x: Floats
    """x inside the box in CSS px (box origin plus its scroll offset); -1 together with y = -1 means outside the box."""
    y: Floats
    """y inside the box in CSS px; -1 together with x = -1 means outside the box."""
    char_index: Ints
    """0-based index into the displayed response text of the character under the point; -1 when none."""
    window: Windows
    """Up to 10 characters each side of that character on the same rendered line, trimmed; "" when none."""
    t_page_ms: Floats
    """Page timer in ms (time since page load minus hidden-tab time); restarts at each page load."""
    t_epoch_ms: Floats | None = None
    """Client wall clock (Unix epoch ms) of each sample, when recorded."""
    head_in_box: Ints | None = None
    """1 if the webcam showed the head inside the suggested box, 0 if not, -1 unknown; None when not recorded."""
    reload_at: Ints = []
    """Sample indices at which a new page load starts (the page timer may restart there)."""


class ViewportStream(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Optional viewport-level positions (IFLLM's abs_* files): client px, -1 when unknown."""

    x: Floats
    y: Floats
    t_page_ms: Floats
    t_epoch_ms: Floats | None = None


class Response(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One answer box: the text exactly as displayed and the streams sampled over it."""

    text: Text
    """The response exactly as displayed; character indices refer to this string."""
    model: Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)] | None = None
    """Generator id, when known."""
    mouse: Stream | None = None
    gaze: Stream | None = None


class Consent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the user agreed to have recorded; streams of a signal without consent are refused."""

    mouse: bool = True
    gaze: bool = False
    camera: bool = False
    """Head-in-box flag from the webcam (video itself never leaves the page)."""


#: The one mapping between explicit preferences and the label every model learns and predicts (P(class 1)):
#: pairwise right = 1, left = 0; pointwise current (this answer) = 1, previous = 0. Inverting it silently is the
#: documented label-inversion pitfall, so every service uses these two helpers.
_LABEL_OF = {"left": 0, "right": 1, "previous": 0, "current": 1}


def label_of(preference: str | None) -> int | None:
    """The class of an explicit preference (1 = right / current, 0 = left / previous); None without one."""
    return None if preference is None else _LABEL_OF[preference]


def preferred_side(mode: str, p: float) -> Literal["left", "right", "current", "previous"]:
    """The side a probability of class 1 prefers: right/left for pairwise, current/previous for pointwise."""
    if mode == "pairwise":
        return "right" if p >= 0.5 else "left"
    return "current" if p >= 0.5 else "previous"


class Feedback(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Explicit feedback, when the user gave it."""

    preference: Literal["left", "right", "current", "previous"] | None = None
    """Pairwise: left/right; pointwise: current (this answer) or previous (the one before) is better."""
    likert: list[Annotated[int, msgspec.Meta(ge=1, le=5)] | None] = []
    """1-5 satisfaction per response, aligned with `responses`."""


class Session(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One question, the one (pointwise) or two (pairwise) answers shown, and how they were read."""

    session_id: Id
    """Client-chosen id; ingest is idempotent on it."""
    user_id: Id
    """Pseudonymous user id."""
    task_id: Id
    """Conversation / task id; questions of one conversation share it."""
    query_id: Id | None = None
    """Upstream question id (IFLLM `query_ID`), when there is one."""
    mode: Literal["pairwise", "pointwise"]
    query: Text
    """The question as typed."""
    responses: Annotated[list[Response], msgspec.Meta(min_length=1, max_length=2)]
    """Pairwise: [left, right]; pointwise: [current]."""
    previous_response: Text | None = None
    """Pointwise: the previous answer of the conversation the current one is compared with."""
    turn: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """0-based position of the question in its conversation."""
    viewport_mouse: ViewportStream | None = None
    viewport_gaze: ViewportStream | None = None
    consent: Consent = Consent()
    feedback: Feedback | None = None
    calibration_accuracy: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None
    """Gaze calibration accuracy in percent, when gaze was recorded."""
