"""IFLLM questions as wire Sessions: every question of the dev subset must pass the contract."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import msgspec
import numpy as np
import pytest

from tacit.ifllm.reader import Dataset, Recording, Segment
from tacit.ifllm.rel import RelFile
from tacit.ifllm.sessions import (
    ConversionCounts,
    segment_to_session,
    session_for_query,
    sessions_command,
    sessions_from_ifllm,
)
from tacit.ifllm.tables import Query
from tacit.schemas import Consent, decode_session, validate_session


def _query(**kw: object) -> Query:
    base: dict[str, object] = {
        "query_id": 7,
        "user_id": "worker_a",
        "task_id": "3",
        "query": "why?",
        "response_1": "abcdef",
        "response_2": "uvwxyz",
        "model_1": "m1",
        "model_2": "m2",
        "likert_1": 4,
        "likert_2": None,
        "preference": 2,
        "adjustment": None,
        "timestamp_ms": 0,
    }
    return Query(**(base | kw))  # type: ignore[arg-type]


def _rel(n: int, *, idx: list[int], t: list[float], epoch: list[float] | None = None) -> RelFile:
    windows = ["", "abc", "x" * 80]
    return RelFile(
        x=np.arange(n, dtype=np.float64),
        y=np.arange(n, dtype=np.float64) * 2,
        idx=np.asarray(idx, dtype=np.int64),
        t=np.asarray(t, dtype=np.float64),
        epoch=np.asarray(epoch if epoch is not None else [1e12 + v for v in t], dtype=np.float64),
        head=np.asarray([1, 0, -1, 1, 0][:n], dtype=np.int8),
        seven=np.ones(n, dtype=np.bool_),
        window_codes=np.asarray([0, 1, 2, 1, 0][:n], dtype=np.int32),
        windows=windows,
        skipped=0,
    )


def _pairwise_segment(query: Query, files: dict[tuple[str, str], RelFile]) -> Segment:
    rec = Recording(user_id=query.user_id, task_id=query.task_id, mode=query.mode, files=files, queries=[query])
    rows = {k: slice(0, len(f)) for k, f in files.items()}
    return Segment(
        recording=rec, query=query, turn=0, rows=rows, placeholder={k: np.zeros(len(f), bool) for k, f in files.items()}
    )


def test_a_hand_built_pairwise_segment_becomes_a_valid_session() -> None:
    query = _query()
    odd = _rel(5, idx=[0, 2, 99, -7, 6], t=[10, 20, 5, 15, 25], epoch=[1.0, 2.0, float("nan"), 4.0, 5.0])
    plain = _rel(3, idx=[-1, 1, 5], t=[1, 2, 3])
    files = {
        ("left", "mouse"): odd,
        ("left", "gaze"): plain,
        ("right", "mouse"): RelFile.empty(),
        ("right", "gaze"): plain,
    }
    counts = ConversionCounts()
    session = segment_to_session(_pairwise_segment(query, files), counts=counts)
    validate_session(session)
    assert (session.session_id, session.query_id, session.mode, session.turn) == ("ifllm-7", "7", "pairwise", 0)
    assert [r.text for r in session.responses] == ["abcdef", "uvwxyz"]
    assert [r.model for r in session.responses] == ["m1", "m2"]
    mouse = session.responses[0].mouse
    assert mouse is not None
    assert mouse.char_index == [0, 2, -1, -1, 6]  # 99 and -7 fall outside "abcdef" (6 is its end)
    assert mouse.reload_at == [2]
    assert mouse.t_epoch_ms is None  # one NaN epoch: the column is left out
    assert mouse.head_in_box is None  # mouse streams carry no head flag
    assert max(map(len, mouse.window)) == 64
    gaze = session.responses[0].gaze
    assert gaze is not None
    assert gaze.head_in_box == [1, 0, -1]
    assert gaze.t_epoch_ms == [1e12 + 1, 1e12 + 2, 1e12 + 3]
    assert session.consent == Consent(mouse=True, gaze=True, camera=True)
    assert session.feedback is not None
    assert (session.feedback.preference, session.feedback.likert) == ("right", [4])
    assert session.previous_response is None
    assert counts.clamped_char_index == 2
    assert counts.dropped_epoch_columns == 1
    assert counts.truncated_windows == 3  # one long window in each of three streams
    assert decode_session(msgspec.json.encode(session)) == session


def test_samples_without_a_usable_time_are_dropped() -> None:
    query = _query(response_2=None, model_2=None, preference=1)
    bad = _rel(3, idx=[0, 1, 2], t=[1, float("nan"), -3])
    files = {("left", "mouse"): bad, ("left", "gaze"): bad}
    counts = ConversionCounts()
    session = segment_to_session(_pairwise_segment(query, files), counts=counts)
    validate_session(session)
    assert session.mode == "pointwise"
    assert session.responses[0].mouse is not None
    assert session.responses[0].mouse.t_page_ms == [1.0]
    assert counts.dropped_samples == 4
    # A pointwise first turn has no previous answer, so "current is better" cannot be sent.
    assert session.feedback is not None
    assert session.feedback.preference is None


@pytest.mark.data
def test_every_question_of_the_dev_subset_is_a_valid_session(ifllm_dir: Path) -> None:
    counts = ConversionCounts()
    modes: Counter[str] = Counter()
    recorded_ids: set[str] = set()
    unrecorded_ids: set[str] = set()
    dataset = Dataset(ifllm_dir)
    recorded = {k for k, _ in dataset.task_dirs()}
    for session in sessions_from_ifllm(ifllm_dir, unrecorded=True, counts=counts):
        validate_session(session)
        modes[session.mode] += 1
        has_streams = session.responses[0].mouse is not None
        (recorded_ids if has_streams else unrecorded_ids).add(session.query_id or "")
        if session.mode == "pointwise" and session.turn:
            assert session.previous_response is not None
    assert recorded_ids == {str(q.query_id) for q in dataset.queries if (q.user_id, q.task_id) in recorded}
    assert unrecorded_ids == {str(q.query_id) for q in dataset.queries if (q.user_id, q.task_id) not in recorded}
    assert set(modes) == {"pairwise", "pointwise"}
    assert counts.samples > 0
    assert counts.clamped_char_index < counts.samples / 1000  # a repair, not the rule
    # Speed is bench/features.py's business: a wall-clock bound here failed on a loaded machine.


@pytest.mark.data
def test_sessions_from_ifllm_leaves_unrecorded_questions_out_by_default(ifllm_dir: Path) -> None:
    first = next(sessions_from_ifllm(ifllm_dir))
    assert first.responses[0].mouse is not None


@pytest.mark.data
def test_the_session_matches_the_question_it_came_from(ifllm_dir: Path) -> None:
    dataset = Dataset(ifllm_dir)
    rec = next(r for r in dataset.recordings() if r.mode == "pointwise" and len(r.queries) > 1)
    segment = rec.segments()[1]
    query = segment.query
    session = session_for_query(dataset, query.query_id)
    assert session == segment_to_session(segment, calibration_accuracy=session.calibration_accuracy)
    assert session.query == query.query
    assert session.responses[0].text == query.response_1
    assert session.previous_response == rec.queries[0].response_1
    mouse = session.responses[0].mouse
    assert mouse is not None
    assert len(mouse.x) == segment.rows[("left", "mouse")].stop - segment.rows[("left", "mouse")].start
    if query.preference in (0, 1):
        assert session.feedback is not None
        assert session.feedback.preference == {1: "current", 0: "previous"}[query.preference]


@pytest.mark.data
def test_from_ifllm_command_prints_the_request_body(
    ifllm_dir: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    query = next(q for q in Dataset(ifllm_dir).queries if q.mode == "pairwise")
    assert sessions_command(["from-ifllm", "--data", str(ifllm_dir), "--query-id", str(query.query_id)]) == 0
    session = decode_session(capsysbinary.readouterr().out)
    assert session.session_id == f"ifllm-{query.query_id}"
    assert session.mode == "pairwise"


@pytest.mark.data
def test_from_ifllm_command_refuses_an_unknown_question(ifllm_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sessions_command(["from-ifllm", "--data", str(ifllm_dir), "--query-id", "-5"]) == 2
    assert "no question with query_ID -5" in capsys.readouterr().err


def test_from_ifllm_command_refuses_a_folder_that_is_not_ifllm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sessions_command(["from-ifllm", "--data", str(tmp_path), "--query-id", "1"]) == 2
    assert "not an IFLLM release folder" in capsys.readouterr().err


@pytest.mark.data
def test_served_features_equal_table_features_unless_a_value_was_repaired(ifllm_dir: Path) -> None:
    """Train/serve parity: a question sent as a Session gets the features the table computed for it."""
    compute_module = pytest.importorskip("feature_svc.features.compute")
    compute, from_segment, from_session = (
        compute_module.compute,
        compute_module.from_segment,
        compute_module.from_session,
    )
    compared = total = 0
    for rec in Dataset(ifllm_dir).recordings():
        for segment in rec.segments():
            total += 1
            counts = ConversionCounts()
            served = compute(from_session(segment_to_session(segment, counts=counts)))
            if counts.clamped_char_index or counts.dropped_samples:
                continue  # indices outside the answer: the session says -1 where the file said something else
            table = compute(from_segment(segment))
            assert served.keys() == table.keys()
            different = [
                k for k in table if not (served[k] == table[k] or (np.isnan(served[k]) and np.isnan(table[k])))
            ]
            assert not different, (segment.query.query_id, different)
            compared += 1
    assert compared > 0.9 * total


def test_add_sessions_command_wires_into_a_cli_parser() -> None:
    import argparse

    from tacit.ifllm.sessions import add_sessions_command

    parser = argparse.ArgumentParser(prog="tacit")
    add_sessions_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sessions", "from-ifllm", "--data", "/d", "--query-id", "12"])
    assert (args.data, args.query_id, callable(args.func)) == (Path("/d"), 12, True)
