"""Gaze/mouse -> question matching (spec 2): the window test, Algorithms A and B, Tacit's segments, and labels."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tacit.ifllm.matching import (
    assign_reference_a,
    assign_reference_b,
    first_seen_reference_b,
    segment_boundaries,
    tick_keys,
    window_match,
)
from tacit.ifllm.reader import Recording
from tacit.ifllm.rel import RelFile
from tacit.ifllm.tables import PLACEHOLDER, Query, read_queries
from tacit.ifllm.testing import write_query_log

OFF = None  # a sample outside the box: (x, y) = (-1, -1), no window, no index


def _rel(rows: Sequence[tuple[float, str | None, int]]) -> RelFile:
    """Rows of (t, window, idx); window None = outside the box."""
    lookup: dict[str, int] = {}
    x, codes = [], []
    for _, window, _ in rows:
        x.append(-1.0 if window is OFF else 50.0)
        codes.append(lookup.setdefault(window or "", len(lookup)))
    n = len(rows)
    return RelFile(
        x=np.asarray(x, dtype=np.float64),
        y=np.asarray(x, dtype=np.float64),
        idx=np.asarray([r[2] for r in rows], dtype=np.int64),
        t=np.asarray([r[0] for r in rows], dtype=np.float64),
        epoch=np.zeros(n, dtype=np.float64),
        head=np.ones(n, dtype=np.int8),
        seven=np.ones(n, dtype=np.bool_),
        window_codes=np.asarray(codes, dtype=np.int32),
        windows=list(lookup) or [""],
        skipped=0,
    )


def _at(text: str, window: str) -> tuple[str, int]:
    """A window and the index of its middle character in `text` (as the browser records them)."""
    return window, text.index(window) + len(window) // 2


# --- the window test (spec 2.2) -----------------------------------------------------------------------------

TEXT = "abcdefghijklmnopqrstuvwxyz0123456789"  # 36 characters


@pytest.mark.parametrize(
    ("window", "idx", "expected"),
    [
        ("fgh", 20, True),  # slice [5, 35) starts at "f"
        ("efg", 20, False),  # "e" is at 4, outside
        ("678", 20, True),  # "8" is at 34, the last character of the slice
        ("789", 20, False),  # "9" is at 35: the end is exclusive
        ("fghijklmnopqrstuvwxyz012345678", 20, True),  # the whole 30-character slice
        ("abc", 3, True),  # slice [0, 18): clipped at the start
        ("rst", 3, False),
        ("abc", -1, True),  # no index: slice [0, 14)
        ("mno", -1, False),
        ("789", 40, True),  # clipped at the end: [25, 36)
        ("ABC", 3, False),  # case-sensitive
    ],
)
def test_window_match_slices_fifteen_characters_each_side(window: str, idx: int, expected: bool) -> None:
    assert window_match(TEXT, window, idx) is expected


def test_window_match_guarded_and_unguarded_empty_window() -> None:
    assert window_match(TEXT, "", 5) is False
    assert window_match(TEXT, "", 5, guarded=False) is True  # the empty string is in everything
    assert window_match("", "", 5, guarded=False) is True
    assert window_match("", "abc", 5, guarded=False) is False
    assert window_match("", "abc", 5) is False


def test_window_match_replaces_newlines_with_spaces() -> None:
    text = "first line\nsecond\r\nthird"
    assert window_match(text, "line second", 10)
    assert window_match(text, "line\nsecond", 10)
    assert window_match(text, "second  third", 16)  # \r\n -> two spaces
    assert not window_match(text, "second third", 16)


# --- Algorithm A (spec 2.3) ---------------------------------------------------------------------------------

A = "Sure! Here is the answer. The quick brown fox jumps over the lazy dog, twice."
B = "Sure! Here is the answer. Pack my box with five dozen liquor jugs, said the cook."


def _algorithm_a_file() -> RelFile:
    return _rel(
        [
            (0, OFF, -1),  # 0: nothing matched yet -> -2
            (10, *_at(PLACEHOLDER, "wait patiently")),  # 1: placeholder -> -1
            (20, OFF, -1),  # 2: a placeholder row does not set the carry -> -2
            (30, "", -1),  # 3: in box, empty window -> placeholder (P10) -> -1
            (40, *_at(A, "quick brown")),  # 4: -> 11
            (50, OFF, -1),  # 5: carried -> 11
            (60, "zzzz", 30),  # 6: no match -> 0
            (70, OFF, -1),  # 7: a non-match does not reset the carry -> 11
            (80, *_at(A, "Here is the")),  # 8: in both answers at the same place -> the first candidate
            (90, *_at(B, "liquor jugs")),  # 9: -> 12
            (100, OFF, -1),  # 10: -> 12
            (110, *_at(PLACEHOLDER, "response will")),  # 11: -> -1
            (120, OFF, -1),  # 12: still 12
            (130, "", 40),  # 13: empty window with an index: still P10 -> -1
            (140, "quick brown", A.index("quick brown") + 40),  # 14: right text, wrong place -> 0
        ]
    )


def test_algorithm_a_labels_by_hand() -> None:
    labels, experimental, not_looking = assign_reference_a(_algorithm_a_file(), [(11, A), (12, B)])
    assert labels.tolist() == [-2, -1, -2, -1, 11, 11, 0, 11, 11, 12, 12, -1, 12, -1, 0]
    assert np.flatnonzero(experimental).tolist() == [1, 3, 11, 13]
    assert np.flatnonzero(not_looking).tolist() == [0, 2, 5, 7, 10, 12]


def test_algorithm_a_first_candidate_wins_and_empty_texts_are_skipped() -> None:
    rel = _algorithm_a_file()
    labels, _, _ = assign_reference_a(rel, [(12, B), (11, A)])
    assert labels[8] == 12
    with_empty, _, _ = assign_reference_a(rel, [(10, ""), (11, A), (12, B)])
    assert with_empty.tolist() == assign_reference_a(rel, [(11, A), (12, B)])[0].tolist()


def test_algorithm_a_placeholder_wins_over_an_answer_quoting_it() -> None:
    answer = PLACEHOLDER[:60] + " Here is my answer."  # the same characters at the same place
    rel = _rel([(0, *_at(PLACEHOLDER, "wait patiently")), (10, OFF, -1)])
    labels, experimental, _ = assign_reference_a(rel, [(5, answer)])
    assert labels.tolist() == [-1, -2]
    assert experimental.tolist() == [True, False]


def _naive_a(rel: RelFile, candidates: Sequence[tuple[int, str]]) -> list[int]:
    """Spec 2.3 row by row."""
    windows = rel.window_array()
    last, out = -2, []
    for i in range(len(rel)):
        if rel.x[i] == -1 and rel.y[i] == -1:
            out.append(last)
        elif window_match(PLACEHOLDER, windows[i], int(rel.idx[i]), guarded=False):
            out.append(-1)
        else:
            idx = int(rel.idx[i])
            hit = next((q for q, t in candidates if t and window_match(t, windows[i], idx, guarded=False)), 0)
            out.append(hit)
            if hit:
                last = hit
    return out


def _naive_b(rel: RelFile, candidates: Sequence[tuple[int, str]]) -> tuple[dict[int, float], list[int]]:
    """Spec 2.4 row by row."""
    windows = rel.window_array()
    seen: dict[int, float] = {}
    for i in range(len(rel)):
        if rel.x[i] == -1 and rel.y[i] == -1:
            continue
        for q, text in candidates:
            if window_match(text, windows[i], int(rel.idx[i])):
                seen[q] = min(seen.get(q, np.inf), float(rel.t[i]))
                break
    labels = []
    for t in rel.t.tolist():
        owners = [(start, q) for q, start in seen.items() if start <= t]
        labels.append(max(owners)[1] if owners else -1)
    return seen, labels


def _random_case(rng: random.Random) -> tuple[RelFile, list[tuple[int, str]]]:
    texts = ["".join(rng.choice("ab .\n") for _ in range(rng.randint(0, 40))) for _ in range(rng.randint(1, 4))]
    candidates = [(100 + k, text) for k, text in enumerate(texts)]
    sources = [*texts, PLACEHOLDER]
    rows: list[tuple[float, str | None, int]] = []
    t = 0.0
    for _ in range(rng.randint(0, 30)):
        t += rng.choice([-500.0, 10.0, 50.0, 100.0])  # negative steps: page reloads
        kind = rng.random()
        if kind < 0.3:
            rows.append((t, OFF, -1))
            continue
        source = rng.choice(sources)
        start = rng.randint(0, max(0, len(source) - 1))
        window = source[start : start + rng.randint(0, 8)].strip()
        idx = -1 if kind < 0.35 else min(start + rng.randint(-20, 20), len(source) + 20)
        rows.append((t, window, max(idx, -1)))
    return _rel(rows), candidates


def test_algorithm_a_equals_the_row_by_row_rule_on_random_files() -> None:
    rng = random.Random(7)
    for _ in range(300):
        rel, candidates = _random_case(rng)
        labels, experimental, not_looking = assign_reference_a(rel, candidates)
        assert labels.tolist() == _naive_a(rel, candidates)
        windows = rel.window_array()
        expected_exp = [
            bool(rel.in_box[i]) and window_match(PLACEHOLDER, windows[i], int(rel.idx[i]), guarded=False)
            for i in range(len(rel))
        ]
        assert experimental.tolist() == expected_exp
        assert not_looking.tolist() == (~rel.in_box).tolist()


def test_algorithm_a_index_below_minus_one_does_not_borrow_another_window() -> None:
    # The reference reads centre_idx with int(float(...)), so a "-2" in a file reaches the matcher.
    text = "0123456789abcdefghijklmnopqrstuvwxyz"
    rel = _rel([(0, "QQ", -2), (1, "wxyz", 40)])
    assert not window_match(text, "QQ", -2)
    assert assign_reference_a(rel, [(5, text)])[0].tolist() == [0, 5]


# --- Algorithm B (spec 2.4) ---------------------------------------------------------------------------------


def test_algorithm_b_first_seen_and_assignment_by_hand() -> None:
    rel = _rel(
        [
            (0, OFF, -1),  # before any first sighting -> -1
            (50, "", -1),  # empty window: never a match under B (guarded)
            (100, *_at(PLACEHOLDER, "wait patiently")),  # placeholder text is no candidate
            (180, *_at(A, "Here is the")),  # fits A and B: A's first sighting only
            (200, *_at(A, "quick brown")),
            (300, OFF, -1),
            (400, *_at(B, "liquor jugs")),  # B's first sighting
            (500, *_at(A, "lazy dog")),  # A again: assignment still goes by first sightings
            (600, OFF, -1),
        ]
    )
    seen = first_seen_reference_b(rel, [(11, A), (12, B)])
    assert seen == {11: 180.0, 12: 400.0}
    assert assign_reference_b(rel, seen).tolist() == [-1, -1, -1, 11, 11, 11, 12, 12, 12]


def test_algorithm_b_assigns_by_page_time_across_reloads() -> None:
    rel = _rel(
        [(100, *_at(A, "quick brown")), (300, *_at(B, "liquor jugs")), (400, OFF, -1), (50, OFF, -1), (150, OFF, -1)]
    )
    seen = first_seen_reference_b(rel, [(11, A), (12, B)])
    assert seen == {11: 100.0, 12: 300.0}
    # after the reload the timer restarts: 50 precedes every first sighting, 150 falls in A's segment
    assert assign_reference_b(rel, seen).tolist() == [11, 12, 12, -1, 11]


def test_algorithm_b_without_sightings_discards_every_row() -> None:
    rel = _rel([(0, OFF, -1), (10, "zzzz", 3)])
    assert first_seen_reference_b(rel, [(11, A)]) == {}
    assert assign_reference_b(rel, {}).tolist() == [-1, -1]


def test_algorithm_b_equals_the_row_by_row_rule_on_random_files() -> None:
    rng = random.Random(11)
    for _ in range(300):
        rel, candidates = _random_case(rng)
        seen, labels = _naive_b(rel, [(q, t) for q, t in candidates if t])
        got = first_seen_reference_b(rel, candidates)
        assert got == seen
        if len(set(seen.values())) == len(seen):  # ties between first sightings have no defined owner
            assert assign_reference_b(rel, got).tolist() == labels


# --- Tacit's canonical segments -----------------------------------------------------------------------------

LEFT = [
    "One: the left answer to the first question, about rivers.",
    "Two: the left answer to the second question, about lakes.",
    "Three: the left answer to the third question, about seas.",
]
RIGHT = [
    "Uno: the right answer to the first question, on mountains.",
    "Dos: the right answer to the second question, on valleys.",
    "Tres: the right answer to the third question, on plains.",
]


def _ticks(sightings: dict[int, tuple[str, str]], n: int = 12, t0: float = 1000.0) -> RelFile:
    """n ticks 100 ms apart; `sightings[row]` = (text, window) shown at that tick, other rows outside the box."""
    return _rel([(t0 + 100 * r, *_at(*sightings[r])) if r in sightings else (t0 + 100 * r, OFF, -1) for r in range(n)])


def test_segments_pool_sightings_across_files_and_ignore_stray_early_sightings() -> None:
    left = _ticks(
        {
            0: (PLACEHOLDER, "wait patiently"),
            1: (LEFT[1], "about lakes"),  # stray early sighting of the second answer
            3: (LEFT[0], "about rivers"),
            5: (LEFT[2], "about seas"),  # the third answer, before the second one started: ignored
            8: (LEFT[1], "about lakes"),
        }
    )
    right = _ticks({2: (RIGHT[0], "on mountains"), 7: (RIGHT[1], "on valleys")})
    starts, placeholders = segment_boundaries([left, right], [LEFT, RIGHT])
    np.testing.assert_array_equal(starts, [1200.0, 1700.0, np.nan])  # q1: right at tick 2; q2: right at 7
    assert np.flatnonzero(placeholders[0]).tolist() == [0]
    assert not placeholders[1].any()


def test_segments_skip_an_unseen_question() -> None:
    left = _ticks({2: (LEFT[0], "about rivers"), 9: (LEFT[2], "about seas")})
    right = _ticks({})
    starts, _ = segment_boundaries([left, right], [LEFT, RIGHT])
    np.testing.assert_array_equal(starts, [1200.0, np.nan, 1900.0])


def test_segments_a_window_in_several_answers_counts_for_the_earliest() -> None:
    shared = "the left answer to the"  # at the same place in all three left answers
    left = _ticks({2: (LEFT[0], "about rivers"), 4: (LEFT[1], shared), 6: (LEFT[1], "about lakes")})
    starts, _ = segment_boundaries([left], [LEFT])
    np.testing.assert_array_equal(starts, [1200.0, 1600.0, np.nan])


def test_segments_empty_window_is_no_placeholder_sighting() -> None:
    rel = _rel([(0, "", -1), (100, "", 5), (200, *_at(PLACEHOLDER, "response will"))])
    _, placeholders = segment_boundaries([rel], [LEFT])
    assert placeholders[0].tolist() == [False, False, True]


def test_segments_survive_a_page_reload() -> None:
    rel = _rel(
        [
            (1000, OFF, -1),
            (1100, *_at(LEFT[0], "about rivers")),
            (1200, OFF, -1),
            (50, OFF, -1),  # reload: the page timer restarts
            (150, *_at(LEFT[1], "about lakes")),  # later than q1's start although its page time is smaller
        ]
    )
    starts, _ = segment_boundaries([rel], [LEFT])
    keys = tick_keys(rel)
    assert np.all(np.diff(keys) > 0)
    np.testing.assert_array_equal(starts, [keys[1], keys[4], np.nan])


def _query(query_id: int, left: str, right: str | None) -> Query:
    return Query(
        query_id=query_id,
        user_id="worker_1",
        task_id="3",
        query=f"question {query_id}",
        response_1=left,
        response_2=right,
        model_1="m1",
        model_2="m2" if right else None,
        likert_1=None,
        likert_2=None,
        preference=None,
        adjustment=None,
        timestamp_ms=None,
    )


def test_recording_segments_are_contiguous_tick_ranges() -> None:
    left = _ticks({2: (LEFT[0], "about rivers"), 8: (LEFT[2], "about seas")})
    right = _ticks({3: (RIGHT[0], "on mountains"), 5: (RIGHT[1], "on valleys")})
    queries = [_query(k + 1, LEFT[k], RIGHT[k]) for k in range(3)]
    recording = Recording(
        user_id="worker_1",
        task_id="3",
        mode="pairwise",
        files={("left", "gaze"): left, ("right", "gaze"): right},
        queries=queries,
    )
    segments = recording.segments()
    assert [s.rows[("left", "gaze")] for s in segments] == [slice(2, 5), slice(5, 8), slice(8, 12)]
    assert [s.rows[("right", "gaze")] for s in segments] == [slice(2, 5), slice(5, 8), slice(8, 12)]
    assert [s.turn for s in segments] == [0, 1, 2]
    assert segments[1].previous is queries[0]


# --- labels from the query log (spec 1.6) -------------------------------------------------------------------


def _row(query_id: int, right: str, preference: str, *, left: str = "left answer") -> list[str]:
    pairwise = right not in ("", "NULL")
    task = "3" if pairwise else "4"
    model_2 = "deepseek-ai/DeepSeek-V3" if pairwise else ""
    return [
        str(query_id),
        "worker_ab",
        task,
        "q?",
        left,
        right,
        "gpt-4o-mini",
        model_2,
        "4.0",
        "3.0" if pairwise else "",
        preference,
        "1",
        "2025-01-02 03:04:05",
    ]


def test_query_log_preferences_become_labels(tmp_path: Path) -> None:
    root = write_query_log(
        tmp_path,
        [
            _row(1, "right answer", "2.0"),
            _row(2, "right answer", "1.0"),
            _row(3, "right answer", ""),
            _row(4, "", "1.0"),
            _row(5, "", "0.0"),
            _row(6, "", ""),
            _row(7, "NULL", "1"),
        ],
    )
    queries = {q.query_id: q for q in read_queries(root)}
    assert [queries[k].mode for k in range(1, 8)] == ["pairwise"] * 3 + ["pointwise"] * 4
    assert [queries[k].preference for k in range(1, 8)] == [2, 1, None, 1, 0, None, 1]
    assert [queries[k].label for k in range(1, 8)] == [1, 0, None, 1, 0, None, 1]
    assert queries[1].likert_1 == 4
    assert queries[1].likert_2 == 3
    assert queries[4].likert_2 is None
    assert queries[4].response_2 is None
    assert queries[7].response_2 is None


def test_query_log_normalises_crlf_and_bad_timestamps(tmp_path: Path) -> None:
    rows = [_row(1, "right\r\nside", "2.0", left="line one\r\nline two"), _row(2, "", "")]
    rows[1][-1] = "0000-00-00 00:00:00"
    queries = read_queries(write_query_log(tmp_path, rows))
    assert queries[0].response_1 == "line one\nline two"
    assert queries[0].response_2 == "right\nside"
    assert queries[0].timestamp_ms == 1735787045000  # 2025-01-02 03:04:05 UTC
    assert queries[1].timestamp_ms is None
    assert queries[0].task_id == "3"
