"""The session contract: every malformed body is refused with a SessionError naming the offending field.

Property-based tests mutate a valid simulated session (encoded to JSON) in one place and check that
:func:`decode_session` raises :class:`SessionError`, never anything else, with the mutated field's path.
Hand-written tests pin the exact path of each validation rule, and a JSON-schema snapshot makes contract
changes show up in review.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tacit.schemas import Session, SessionError, decode_session, decode_sessions, validate_session
from tacit.schemas.session import ID_PATTERN, MAX_ID_CHARS, MAX_TEXT_CHARS
from tacit.schemas.snapshot import contract_view
from tacit.simulate import ReaderProfile, simulate_session

SNAPSHOT = Path(__file__).parent / "snapshots" / "session.schema.json"

# Derandomised and without the example database, so that every run checks the same examples.
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

Path_ = tuple[str | int, ...]

STREAM_COLUMNS = ("x", "y", "char_index", "window", "t_page_ms", "t_epoch_ms", "head_in_box")
FLOAT_COLUMNS = ("x", "y", "t_page_ms", "t_epoch_ms")
MODES = ("pairwise", "pointwise")
CODES = {
    "invalid",
    "malformed",
    "length_mismatch",
    "not_finite",
    "negative_time",
    "time_backwards",
    "out_of_range",
    "mode_mismatch",
    "no_consent",
}


@functools.cache
def _base(mode: str) -> bytes:
    """A small valid session of each mode, without page reloads, as JSON."""
    session = simulate_session(
        seed=11 if mode == "pairwise" else 12,
        mode=mode,  # type: ignore[arg-type]
        samples=40,
        profile=ReaderProfile(p_reload=0.0),
    )
    return msgspec.json.encode(session)


def _doc(mode: str = "pairwise") -> dict[str, Any]:
    """A fresh, mutable copy of the base session as JSON builtins."""
    doc: dict[str, Any] = msgspec.json.decode(_base(mode))
    return doc


def _streams(mode: str) -> list[Path_]:
    return [("responses", i, m) for i in range(2 if mode == "pairwise" else 1) for m in ("mouse", "gaze")]


def _name(path: Path_) -> str:
    """`("responses", 0, "mouse", "x", 3)` -> `responses[0].mouse.x[3]`, the form SessionError.field uses."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _get(doc: Any, path: Path_) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _set(doc: Any, path: Path_, value: Any) -> None:
    _get(doc, path[:-1])[path[-1]] = value


def _nodes(node: Any, path: Path_ = ()) -> list[tuple[Path_, Any]]:
    """Every value below `node` (objects, arrays and scalars) with its path."""
    found: list[tuple[Path_, Any]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        found.append(((*path, key), value))
        found.extend(_nodes(value, (*path, key)))
    return found


def _refused(body: bytes | str) -> SessionError:
    """decode_session must raise SessionError (any other exception fails the test) naming a field."""
    with pytest.raises(SessionError) as info:
        decode_session(body)
    err = info.value
    assert err.field
    assert err.detail
    assert err.code
    return err


def _refused_struct(doc: dict[str, Any]) -> SessionError:
    """The struct path: builtins converted to a Session in Python, then validate_session."""
    session = msgspec.convert(doc, Session)
    with pytest.raises(SessionError) as info:
        validate_session(session)
    assert info.value.field
    return info.value


def _accepts_or_refuses(body: bytes | str, decode: Callable[[bytes | str], object] = decode_session) -> None:
    error: SessionError | None = None
    try:
        decode(body)
    except SessionError as err:
        error = err
    if error is not None:
        assert error.field
        assert error.code in CODES


def test_base_sessions_are_valid() -> None:
    for mode in MODES:
        session = decode_session(_base(mode))
        assert session.mode == mode
        for path in _streams(mode):
            stream = _get(_doc(mode), path)
            assert stream["reload_at"] == []
            assert any(h == 1 for h in stream["head_in_box"])


# --- property-based: one mutation, one SessionError naming it -----------------------------------------------

_REQUIRED: list[Path_] = [
    ("session_id",),
    ("user_id",),
    ("task_id",),
    ("mode",),
    ("query",),
    ("responses",),
    ("responses", 0, "text"),
    ("responses", 1, "text"),
    *[("responses", i, m, c) for i in (0, 1) for m in ("mouse", "gaze") for c in STREAM_COLUMNS[:5]],
]


@FUZZ
@given(path=st.sampled_from(_REQUIRED))
def test_missing_required_field_is_named(path: Path_) -> None:
    doc = _doc()
    del _get(doc, path[:-1])[path[-1]]
    err = _refused(msgspec.json.encode(doc))
    assert err.field == _name(path)
    assert "missing required field" in err.detail


def _wrong_type(value: Any) -> st.SearchStrategy[Any]:
    """JSON values that the field currently holding `value` can never accept."""
    containers = st.sampled_from([[], {}, [[1]], {"a": 1}])
    if isinstance(value, bool):
        return st.one_of(st.text(max_size=4), st.integers(), containers)
    if isinstance(value, int):
        return st.one_of(st.text(max_size=4), st.booleans(), st.floats(0.25, 1e9).filter(lambda f: not f.is_integer()))
    if isinstance(value, float):
        return st.one_of(st.text(max_size=4), st.booleans(), containers)
    if isinstance(value, str):
        return st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), containers)
    if isinstance(value, list):
        return st.one_of(st.text(max_size=4), st.integers(), st.booleans(), st.just({"a": 1}))
    if isinstance(value, dict):
        return st.one_of(st.text(max_size=4), st.integers(), st.booleans(), st.just([1, 2]))
    return st.sampled_from([True, [[1]]])  # a null field: no nullable field takes a bool or a nested array


@FUZZ
@given(mode=st.sampled_from(MODES), data=st.data())
def test_wrong_type_is_named(mode: str, data: st.DataObject) -> None:
    doc = _doc(mode)
    path, value = data.draw(st.sampled_from(_nodes(doc)), label="node")
    bad = data.draw(_wrong_type(value), label="bad value")
    _set(doc, path, bad)
    err = _refused(msgspec.json.encode(doc))
    if value is None:
        assert err.field.startswith(_name(path))
    else:
        assert err.field == _name(path)


@FUZZ
@given(mode=st.sampled_from(MODES), data=st.data())
def test_truncated_json_is_refused(mode: str, data: st.DataObject) -> None:
    body = _base(mode)
    cut = data.draw(st.integers(0, len(body) - 1), label="cut")
    err = _refused(body[:cut])
    if err.code == "malformed":
        assert err.field == "$"
    else:  # a type error met before the truncation is reported first, at its field
        assert err.field != "$"


@FUZZ
@given(
    mode=st.sampled_from(MODES),
    column=st.sampled_from(FLOAT_COLUMNS),
    value=st.sampled_from([math.nan, math.inf, -math.inf]),
    data=st.data(),
)
def test_non_finite_floats_are_named(mode: str, column: str, value: float, data: st.DataObject) -> None:
    doc = _doc(mode)
    stream = data.draw(st.sampled_from(_streams(mode)), label="stream")
    j = data.draw(st.integers(0, len(_get(doc, (*stream, "x"))) - 1), label="sample")
    path = (*stream, column, j)
    _set(doc, path, value)
    # Struct path: Python floats reach validate_session unchanged.
    err = _refused_struct(doc)
    assert err.field == _name(path)
    assert err.code == "not_finite"
    # JSON path: msgspec writes NaN and Infinity as null, which is not a float.
    err = _refused(msgspec.json.encode(doc))
    assert err.field == _name(path)
    # Python's json writes the non-standard NaN/Infinity tokens: not JSON, refused as malformed.
    err = _refused(json.dumps(doc))
    assert (err.field, err.code) == ("$", "malformed")
    # A literal too large for a double.
    _set(doc, path, "@@BIG@@")
    err = _refused(msgspec.json.encode(doc).replace(b'"@@BIG@@"', b"-1e999" if value < 0 else b"1e999"))
    assert err.field == _name(path)


@FUZZ
@given(
    mode=st.sampled_from(MODES),
    column=st.sampled_from(STREAM_COLUMNS),
    grow=st.booleans(),
    data=st.data(),
)
def test_unequal_column_lengths_are_named(mode: str, column: str, grow: bool, data: st.DataObject) -> None:
    doc = _doc(mode)
    stream = data.draw(st.sampled_from(_streams(mode)), label="stream")
    values = _get(doc, (*stream, column))
    j = data.draw(st.integers(0, len(values) - 1), label="sample")
    if grow:
        values.insert(j, values[j])
    else:
        del values[j]
    err = _refused(msgspec.json.encode(doc))
    # Lengths are compared with x, so a changed x is reported at the first other column.
    assert err.field == _name((*stream, "y" if column == "x" else column))
    assert err.code == "length_mismatch"


@FUZZ
@given(mode=st.sampled_from(MODES), back=st.floats(0.01, 1e7), data=st.data())
def test_time_going_backwards_needs_a_reload_marker(mode: str, back: float, data: st.DataObject) -> None:
    doc = _doc(mode)
    stream = data.draw(st.sampled_from(_streams(mode)), label="stream")
    t = _get(doc, (*stream, "t_page_ms"))
    j = data.draw(st.integers(1, len(t) - 1), label="sample")
    t[j] = t[j - 1] - back
    err = _refused(msgspec.json.encode(doc))
    assert err.field == _name((*stream, "t_page_ms", j))
    assert err.code == ("negative_time" if t[j] < 0 else "time_backwards")
    _get(doc, stream)["reload_at"] = [j]
    if t[j] >= 0:
        decode_session(msgspec.json.encode(doc))


@FUZZ
@given(
    mode=st.sampled_from(MODES),
    # Past the text, below -1, and beyond int64 (JSON integers have no size limit).
    past=st.one_of(st.integers(1, 10_000), st.integers(2**63 - 1, 2**70), st.integers(-(2**70), -2)),
    data=st.data(),
)
def test_char_index_out_of_range_is_named(mode: str, past: int, data: st.DataObject) -> None:
    doc = _doc(mode)
    stream = data.draw(st.sampled_from(_streams(mode)), label="stream")
    idx = _get(doc, (*stream, "char_index"))
    j = data.draw(st.integers(0, len(idx) - 1), label="sample")
    idx[j] = len(_get(doc, stream[:2])["text"]) + past if past > 0 else past
    err = _refused(msgspec.json.encode(doc))
    assert err.field == _name((*stream, "char_index", j))
    assert err.code == "out_of_range"


_OBJECTS: list[Path_] = [
    (),
    ("responses", 0),
    ("responses", 0, "mouse"),
    ("responses", 1, "gaze"),
    ("consent",),
    ("feedback",),
]


@FUZZ
@given(where=st.sampled_from(_OBJECTS), key=st.text(min_size=1, max_size=12), value=st.integers())
def test_unknown_fields_are_named(where: Path_, key: str, value: int) -> None:
    doc = _doc()
    target = _get(doc, where)
    if key in target:
        key += "_x"
    target[key] = value
    err = _refused(msgspec.json.encode(doc))
    assert "unknown field" in err.detail
    if key.isidentifier():
        assert err.field == _name((*where, key))
    else:
        assert err.field.startswith(_name(where))


@FUZZ
@given(change=st.sampled_from(["drop_left", "drop_right", "to_pointwise", "add_response", "to_pairwise"]))
def test_mode_contradicting_the_responses_is_named(change: str) -> None:
    doc = _doc("pointwise" if change in ("add_response", "to_pairwise") else "pairwise")
    if change == "drop_left":
        del doc["responses"][0]
    elif change == "drop_right":
        del doc["responses"][1]
    elif change == "to_pointwise":
        doc["mode"] = "pointwise"
    elif change == "add_response":
        doc["responses"].append(doc["responses"][0])
    else:
        doc["mode"] = "pairwise"
    err = _refused(msgspec.json.encode(doc))
    assert err.field == "responses"
    assert err.code == "mode_mismatch"


@FUZZ
@given(mode=st.sampled_from(MODES), signal=st.sampled_from(["mouse", "gaze", "camera"]))
def test_streams_without_consent_are_named(mode: str, signal: str) -> None:
    doc = _doc(mode)
    doc["consent"][signal] = False
    err = _refused(msgspec.json.encode(doc))
    assert err.code == "no_consent"
    assert err.field == ("responses[0].mouse.head_in_box" if signal == "camera" else f"responses[0].{signal}")


@FUZZ
@given(mode=st.sampled_from(MODES), data=st.data())
def test_preference_of_the_other_mode_is_named(mode: str, data: st.DataObject) -> None:
    doc = _doc(mode)
    other = ("current", "previous") if mode == "pairwise" else ("left", "right")
    doc["feedback"]["preference"] = data.draw(st.sampled_from(other))
    err = _refused(msgspec.json.encode(doc))
    assert (err.field, err.code) == ("feedback.preference", "mode_mismatch")


_LIMITED: list[tuple[str, Path_, int]] = [
    ("pairwise", ("session_id",), MAX_ID_CHARS),
    ("pairwise", ("user_id",), MAX_ID_CHARS),
    ("pairwise", ("task_id",), MAX_ID_CHARS),
    ("pairwise", ("query_id",), MAX_ID_CHARS),
    ("pairwise", ("responses", 1, "model"), MAX_ID_CHARS),
    ("pairwise", ("query",), MAX_TEXT_CHARS),
    ("pairwise", ("responses", 0, "text"), MAX_TEXT_CHARS),
    ("pointwise", ("previous_response",), MAX_TEXT_CHARS),
    ("pairwise", ("responses", 1, "gaze", "window", 7), 64),
]


@settings(FUZZ, max_examples=30)
@given(
    target=st.sampled_from(_LIMITED),
    extra=st.integers(1, 300),
    char=st.characters(exclude_categories=["Cs"]),
)
def test_huge_strings_are_named(target: tuple[str, Path_, int], extra: int, char: str) -> None:
    mode, path, limit = target
    doc = _doc(mode)
    _set(doc, path, char * (limit + extra))
    err = _refused(msgspec.json.encode(doc))
    assert err.field == _name(path)
    assert "length" in err.detail


ODD = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40),
    st.sampled_from(["\u200b", "\u202eevil", "e\u0301", "🙂🏳️‍🌈", "\x00", "\ufeffbom", "\U0010ffff", "漢字", '"\\`']),
)


@FUZZ
@given(
    path=st.sampled_from([("session_id",), ("user_id",), ("task_id",), ("query_id",)]),
    odd=st.one_of(ODD, st.sampled_from([".", "..", "a/b", "../x", ".hidden", "a b", "a%2Fb", "a?b", "a#b"])),
)
def test_ids_outside_the_safe_alphabet_are_refused_naming_the_field(path: Path_, odd: str) -> None:
    # An id with '/', or '.' / '..', was stored but could never be read or erased through a URL (issue 14).
    assume(re.fullmatch(ID_PATTERN, odd) is None)
    doc = _doc()
    _set(doc, path, odd)
    err = _refused(msgspec.json.encode(doc))
    assert (err.field, err.code) == (path[0], "invalid")
    assert "letters, digits" in err.detail


@pytest.mark.parametrize("value", ["ifllm-123", "worker_6680f3d4", "u1.ab12cd.q1", "demo-1f2e", "a:b@c", "x" * 128])
def test_ids_in_the_safe_alphabet_are_accepted(value: str) -> None:
    doc = _doc()
    for name in ("session_id", "user_id", "task_id", "query_id"):
        doc[name] = value
    assert decode_session(msgspec.json.encode(doc)).user_id == value


@FUZZ
@given(
    path=st.sampled_from([("query",), ("responses", 0, "model"), ("responses", 0, "gaze", "window", 3)]),
    odd=ODD,
    append_to_text=ODD,
)
def test_odd_unicode_is_carried_unchanged(path: Path_, odd: str, append_to_text: str) -> None:
    doc = _doc()
    _set(doc, path, odd)
    doc["responses"][1]["text"] += append_to_text  # only longer: every char index stays inside
    session = decode_session(msgspec.json.encode(doc))
    assert _get(msgspec.to_builtins(session), path) == odd
    assert session.responses[1].text.endswith(append_to_text)
    assert decode_session(msgspec.json.encode(doc).decode()) == session


@FUZZ
@given(
    path=st.sampled_from(
        [("query",), ("session_id",), ("responses", 0, "text"), ("responses", 0, "mouse", "window", 2)]
    ),
    bad=st.sampled_from([b"\\ud800", b"\\udfff", b"a\\ud83dz", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]),
)
def test_invalid_text_encoding_is_refused(path: Path_, bad: bytes) -> None:
    doc = _doc()
    _set(doc, path, "@@BAD@@")
    body = msgspec.json.encode(doc).replace(b"@@BAD@@", bad)
    err = _refused(body)
    assert (err.field, err.code) == ("$", "malformed")


def test_a_str_body_with_a_lone_surrogate_is_refused() -> None:
    doc = _doc()
    doc["query"] = "@@BAD@@"
    body = msgspec.json.encode(doc).decode().replace("@@BAD@@", "\ud800")
    err = _refused(body)
    assert (err.field, err.code) == ("$", "malformed")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@settings(FUZZ, max_examples=300)
@given(mode=st.sampled_from(MODES), data=st.data())
def test_any_single_replacement_is_accepted_or_refused_cleanly(mode: str, data: st.DataObject) -> None:
    doc = _doc(mode)
    path, _ = data.draw(st.sampled_from(_nodes(doc)), label="node")
    if data.draw(st.booleans(), label="delete"):
        del _get(doc, path[:-1])[path[-1]]
    else:
        _set(doc, path, data.draw(JSON_VALUES, label="value"))
    _accepts_or_refuses(msgspec.json.encode(doc))


@settings(FUZZ, max_examples=300)
@given(mode=st.sampled_from(MODES), data=st.data())
def test_corrupted_bytes_are_accepted_or_refused_cleanly(mode: str, data: st.DataObject) -> None:
    body = bytearray(_base(mode))
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    _accepts_or_refuses(bytes(body))


@FUZZ
@given(body=st.one_of(st.binary(max_size=200), st.text(max_size=200), JSON_VALUES.map(msgspec.json.encode)))
def test_arbitrary_bodies_are_refused_cleanly(body: bytes | str) -> None:
    _accepts_or_refuses(body)
    _accepts_or_refuses(body, decode_sessions)


@FUZZ
@given(at=st.integers(0, 2), column=st.sampled_from(["x", "t_page_ms", "char_index"]))
def test_batch_errors_name_the_item(at: int, column: str) -> None:
    docs = [_doc(), _doc("pointwise"), _doc()]
    del _get(docs[at], ("responses", 0, "mouse", column))[0]
    with pytest.raises(SessionError) as info:
        decode_sessions(msgspec.json.encode(docs))
    assert info.value.field == f"[{at}].responses[0].mouse." + ("y" if column == "x" else column)


# --- hand-written: the exact path of each rule ----------------------------------------------------------------


def _expect(doc: dict[str, Any], field: str, code: str) -> None:
    err = _refused(msgspec.json.encode(doc))
    assert (err.field, err.code) == (field, code), err.detail
    assert err.as_dict() == {"code": code, "field": field, "detail": err.detail}


def test_rule_pairwise_needs_two_responses() -> None:
    doc = _doc()
    doc["responses"].pop()
    _expect(doc, "responses", "mode_mismatch")


def test_rule_pointwise_needs_one_response() -> None:
    doc = _doc("pointwise")
    doc["responses"].append(doc["responses"][0])
    _expect(doc, "responses", "mode_mismatch")


def test_rule_responses_count_is_bounded_by_the_schema() -> None:
    doc = _doc()
    doc["responses"] = []
    _expect(doc, "responses", "invalid")
    doc["responses"] = [_doc()["responses"][0]] * 3
    _expect(doc, "responses", "invalid")


def test_rule_previous_response_only_in_pointwise() -> None:
    doc = _doc()
    doc["previous_response"] = "earlier answer"
    _expect(doc, "previous_response", "mode_mismatch")


def test_rule_stream_needs_consent() -> None:
    doc = _doc()
    doc["consent"]["gaze"] = False
    doc["responses"][0]["gaze"] = None
    _expect(doc, "responses[1].gaze", "no_consent")
    doc = _doc()
    doc["consent"]["mouse"] = False
    _expect(doc, "responses[0].mouse", "no_consent")


def test_rule_head_flag_needs_camera_consent_unless_unknown() -> None:
    doc = _doc()
    doc["consent"]["camera"] = False
    for path in _streams("pairwise"):
        _get(doc, path)["head_in_box"] = [-1] * len(_get(doc, path)["x"])
    decode_session(msgspec.json.encode(doc))
    _get(doc, ("responses", 1, "gaze"))["head_in_box"][5] = 1
    _expect(doc, "responses[1].gaze.head_in_box", "no_consent")


def test_rule_head_flag_values() -> None:
    doc = _doc()
    doc["responses"][0]["mouse"]["head_in_box"][3] = 2
    _expect(doc, "responses[0].mouse.head_in_box[3]", "out_of_range")
    doc["responses"][0]["mouse"]["head_in_box"][3] = 2**64
    _expect(doc, "responses[0].mouse.head_in_box[3]", "out_of_range")


@pytest.mark.parametrize("column", ["y", "char_index", "window", "t_page_ms", "t_epoch_ms", "head_in_box"])
def test_rule_columns_have_equal_length(column: str) -> None:
    doc = _doc()
    doc["responses"][1]["mouse"][column].pop()
    _expect(doc, f"responses[1].mouse.{column}", "length_mismatch")


def test_rule_optional_columns_may_be_absent() -> None:
    doc = _doc()
    del doc["responses"][0]["mouse"]["t_epoch_ms"]
    doc["responses"][0]["mouse"]["head_in_box"] = None
    session = decode_session(msgspec.json.encode(doc))
    assert session.responses[0].mouse is not None
    assert session.responses[0].mouse.t_epoch_ms is None


@pytest.mark.parametrize("column", FLOAT_COLUMNS)
def test_rule_floats_are_finite(column: str) -> None:
    doc = _doc()
    doc["responses"][1]["gaze"][column][5] = math.inf
    err = _refused_struct(doc)
    assert (err.field, err.code) == (f"responses[1].gaze.{column}[5]", "not_finite")
    _expect(doc, f"responses[1].gaze.{column}[5]", "invalid")  # JSON null


def test_rule_page_time_is_not_negative() -> None:
    doc = _doc()
    doc["responses"][0]["mouse"]["t_page_ms"][0] = -5.0
    _expect(doc, "responses[0].mouse.t_page_ms[0]", "negative_time")


def test_rule_page_time_goes_back_only_at_a_marked_reload() -> None:
    doc = _doc()
    t = doc["responses"][0]["gaze"]["t_page_ms"]
    t[20:] = [v - t[20] + 10.0 for v in t[20:]]
    _expect(doc, "responses[0].gaze.t_page_ms[20]", "time_backwards")
    doc["responses"][0]["gaze"]["reload_at"] = [20]
    decode_session(msgspec.json.encode(doc))
    doc["responses"][0]["gaze"]["reload_at"] = [7, 20]  # extra markers without a step back are allowed
    decode_session(msgspec.json.encode(doc))
    t[30] = t[29] - 1.0
    _expect(doc, "responses[0].gaze.t_page_ms[30]", "time_backwards")


def test_rule_equal_page_times_are_allowed() -> None:
    doc = _doc()
    t = doc["responses"][0]["mouse"]["t_page_ms"]
    t[4] = t[3]
    decode_session(msgspec.json.encode(doc))


@pytest.mark.parametrize("reload_at", [[0], [40], [5, 5], [9, 3], [-1], [2**63]])
def test_rule_reload_markers_are_increasing_inner_indices(reload_at: list[int]) -> None:
    doc = _doc()
    doc["responses"][0]["mouse"]["reload_at"] = reload_at
    field = "responses[0].mouse.reload_at" + ("[0]" if reload_at == [2**63] else "")
    _expect(doc, field, "out_of_range" if reload_at == [2**63] else "invalid")


def test_rule_char_index_range() -> None:
    doc = _doc()
    n = len(doc["responses"][1]["text"])
    doc["responses"][1]["mouse"]["char_index"][9] = n  # the caret after the last character
    decode_session(msgspec.json.encode(doc))
    doc["responses"][1]["mouse"]["char_index"][9] = n + 1
    _expect(doc, "responses[1].mouse.char_index[9]", "out_of_range")
    doc["responses"][1]["mouse"]["char_index"][9] = -2
    _expect(doc, "responses[1].mouse.char_index[9]", "out_of_range")
    doc["responses"][1]["mouse"]["char_index"][9] = 2**64 - 1
    _expect(doc, "responses[1].mouse.char_index[9]", "out_of_range")


def test_rule_window_length() -> None:
    doc = _doc()
    doc["responses"][0]["gaze"]["window"][1] = "w" * 65
    _expect(doc, "responses[0].gaze.window[1]", "invalid")


def _with_viewport(doc: dict[str, Any], name: str = "viewport_mouse") -> dict[str, Any]:
    doc[name] = {"x": [1.0, 2.0, 3.0], "y": [4.0, 5.0, 6.0], "t_page_ms": [0.0, 70.0, 140.0], "t_epoch_ms": None}
    return doc


def test_rule_viewport_streams() -> None:
    decode_session(msgspec.json.encode(_with_viewport(_with_viewport(_doc()), "viewport_gaze")))
    doc = _with_viewport(_doc(), "viewport_gaze")
    doc["consent"]["gaze"] = False
    for response in doc["responses"]:
        response["gaze"] = None
    _expect(doc, "viewport_gaze", "no_consent")
    doc = _with_viewport(_doc())
    doc["viewport_mouse"]["t_page_ms"].pop()
    _expect(doc, "viewport_mouse.t_page_ms", "length_mismatch")
    for column in ("x", "y", "t_page_ms"):
        doc = _with_viewport(_doc())
        doc["viewport_mouse"][column][1] = math.nan
        err = _refused_struct(doc)
        assert (err.field, err.code) == (f"viewport_mouse.{column}[1]", "not_finite")


def test_rule_preference_matches_the_mode() -> None:
    doc = _doc()
    doc["feedback"]["preference"] = "previous"
    _expect(doc, "feedback.preference", "mode_mismatch")
    doc = _doc("pointwise")
    doc["feedback"]["preference"] = "left"
    _expect(doc, "feedback.preference", "mode_mismatch")
    doc["feedback"]["preference"] = "tie"
    _expect(doc, "feedback.preference", "invalid")


def test_rule_current_or_previous_needs_the_previous_response() -> None:
    doc = _doc("pointwise")
    doc["feedback"]["preference"] = "current"
    doc["previous_response"] = None
    _expect(doc, "previous_response", "invalid")


def test_rule_likert() -> None:
    doc = _doc("pointwise")
    doc["feedback"]["likert"] = [3, 4]
    _expect(doc, "feedback.likert", "length_mismatch")
    doc["feedback"]["likert"] = [6]
    _expect(doc, "feedback.likert[0]", "invalid")
    doc["feedback"]["likert"] = [None]
    decode_session(msgspec.json.encode(doc))


def test_rule_ids_are_not_empty() -> None:
    doc = _doc()
    doc["user_id"] = ""
    _expect(doc, "user_id", "invalid")


def test_rule_calibration_accuracy_is_a_percentage() -> None:
    doc = _doc()
    doc["calibration_accuracy"] = 100.5
    _expect(doc, "calibration_accuracy", "invalid")
    doc["calibration_accuracy"] = math.nan
    with pytest.raises(msgspec.ValidationError, match="calibration_accuracy"):
        msgspec.convert(doc, Session)


def test_rule_missing_and_unknown_fields_name_the_key() -> None:
    doc = _doc()
    del doc["session_id"]
    _expect(doc, "session_id", "invalid")
    doc = _doc()
    del doc["responses"][1]["gaze"]["window"]
    _expect(doc, "responses[1].gaze.window", "invalid")
    doc = _doc()
    doc["responses"][0]["mouse"]["pressure"] = [1.0]
    _expect(doc, "responses[0].mouse.pressure", "invalid")
    doc = _doc()
    doc["extra"] = 1
    _expect(doc, "extra", "invalid")


def test_rule_malformed_bodies() -> None:
    for body in (b"", b"{", b"null", b"[]", b"\xff\xfe", "{\ud800}"):
        err = _refused(body)
        assert err.field == "$"


def test_decode_sessions_prefixes_the_item() -> None:
    docs = [_doc(), _doc()]
    docs[1]["responses"][0]["gaze"]["char_index"][2] = -7
    with pytest.raises(SessionError) as info:
        decode_sessions(msgspec.json.encode(docs))
    assert info.value.field == "[1].responses[0].gaze.char_index[2]"
    del docs[0]["query"]
    with pytest.raises(SessionError) as info:
        decode_sessions(msgspec.json.encode(docs))
    assert info.value.field == "[0].query"
    with pytest.raises(SessionError) as info:
        decode_sessions(b"[\xff]")
    assert info.value.field == "$"


# --- the contract itself ------------------------------------------------------------------------------------


def test_json_schema_matches_the_committed_snapshot() -> None:
    schema = contract_view(msgspec.json.schema(Session))
    if not SNAPSHOT.exists():
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        pytest.fail(f"no schema snapshot: wrote {SNAPSHOT}; review and commit it, then rerun")
    committed = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert schema == contract_view(committed), (
        f"the Session wire contract changed: if intended, delete {SNAPSHOT.name}, rerun, review the diff and commit it"
    )
