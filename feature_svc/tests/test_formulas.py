"""Feature formulas of spec section 3 on hand-built trajectories; every expected value is worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from feature_svc.features.compute import continuous_time
from feature_svc.features.formulas import (
    N_WINDOWS,
    Track,
    capped_engaged_ms,
    counts,
    pairwise_cross,
    pairwise_phases,
    per_query,
    pointwise_cross,
    pointwise_phases,
    safe_ratio,
)

OFF = None  # marks a sample outside the box: (x, y) = (-1, -1), no character


def _track(rows: list[tuple[float, int | None] | tuple[float, int | None, bool]]) -> Track:
    """Rows of (t, idx[, placeholder]); idx None = outside the box, -1 = in the box without a character."""
    t, x, y, idx, ph = [], [], [], [], []
    for row in rows:
        time, index = row[0], row[1]
        t.append(time)
        ph.append(bool(row[2]) if len(row) > 2 else False)
        if index is OFF:
            x.append(-1.0)
            y.append(-1.0)
            idx.append(-1)
        else:
            x.append(10.0)
            y.append(20.0)
            idx.append(index)
    return Track(
        x=np.asarray(x, dtype=np.float64),
        y=np.asarray(y, dtype=np.float64),
        idx=np.asarray(idx, dtype=np.int64),
        t=np.asarray(t, dtype=np.float64),
        placeholder=np.asarray(ph, dtype=np.bool_),
    )


def _windows(values: dict[str, float], prefix: str) -> list[float]:
    return [values[f"{prefix}window_{i:03d}"] for i in range(N_WINDOWS)]


# --- capped engaged time and safe ratio (spec 3.1) ---------------------------------------------------------


def test_capped_engaged_time_caps_each_gap_at_one_second() -> None:
    # gaps 100, 1400 -> 1000, 100, 1000 (exactly the cap), 2 -> 2202
    t = np.array([0.0, 100.0, 1500.0, 1600.0, 2600.0, 2602.0])
    assert capped_engaged_ms(t) == pytest.approx(100 + 1000 + 100 + 1000 + 2)


def test_capped_engaged_time_last_sample_contributes_nothing() -> None:
    assert capped_engaged_ms(np.array([0.0, 250.0])) == pytest.approx(250.0)
    assert capped_engaged_ms(np.array([0.0, 250.0, 250.0])) == pytest.approx(250.0)


@pytest.mark.parametrize("t", [[], [123.0]])
def test_capped_engaged_time_is_zero_for_at_most_one_sample(t: list[float]) -> None:
    assert capped_engaged_ms(np.asarray(t, dtype=np.float64)) == 0.0


def test_safe_ratio_adds_epsilon_to_the_denominator() -> None:
    assert safe_ratio(2.0, 1.0) == pytest.approx(2.0 / 1.001)
    assert safe_ratio(0.0, 0.0) == 0.0
    assert safe_ratio(0.05, 0.0) == pytest.approx(50.0)


def test_safe_ratio_is_capped_at_100_from_above_only() -> None:
    assert safe_ratio(1.0, 0.0) == 100.0  # 1000 before the cap
    assert safe_ratio(1000.0, 1.0) == 100.0
    assert safe_ratio(-5.0, 0.0) == pytest.approx(-5000.0)  # no lower cap (spec 11)
    assert safe_ratio(-1000.0, 1.0) == pytest.approx(-1000.0 / 1.001)


# --- per-query features (spec 3.2) --------------------------------------------------------------------------

P = "response_A_gaze_"


def test_per_query_scalars_by_hand() -> None:
    length = 100
    track = _track(
        [
            (0.0, 10),
            (100.0, 20),
            (200.0, OFF),  # not looking, still a data point
            (1500.0, 30),
            (1600.0, -1),  # in the box but no character: not looking
            (2000.0, 40),
        ]
    )
    out = per_query(track, length, P)
    # looking rows: t = 0, 100, 1500, 2000; idx / L = .1, .2, .3, .4
    assert out[f"{P}data_points"] == 6
    assert out[f"{P}overall_attention_ratio"] == pytest.approx(4 / 6)
    assert out[f"{P}focused_engagement_time"] == pytest.approx(100 + 1000 + 500)
    assert out[f"{P}focused_engagement_ratio"] == pytest.approx(1600 / 2000)
    assert out[f"{P}normalized_avg_char_position"] == pytest.approx(0.25)
    # deviations from .25: -.15, -.05, .05, .15; squares sum to .05; ddof = 1 -> / 3
    assert out[f"{P}normalized_char_position_variance"] == pytest.approx(0.05 / 3)
    assert out[f"{P}reading_completion_ratio"] == pytest.approx(0.4)


def test_per_query_windows_by_hand() -> None:
    # span 2000 ms -> 20 bins of 100 ms: [0,100) holds t=0, [100,200) t=100, [1500,1600) t=1500; t=2000 is the
    # right edge of the last half-open bin, so it is in no bin.
    track = _track([(0.0, 10), (100.0, 20), (200.0, OFF), (1500.0, 30), (1600.0, -1), (2000.0, 40)])
    expected = [0.0] * N_WINDOWS
    expected[0], expected[1], expected[15] = 0.1, 0.2, 0.3
    assert _windows(per_query(track, 100, P), P) == pytest.approx(expected)


def test_per_query_windows_average_several_samples_and_start_at_the_first_looking_time() -> None:
    # looking span [500, 2500] -> bins of 100 ms starting at 500
    track = _track(
        [
            (400.0, OFF),  # not looking: does not move the start
            (500.0, 10),
            (520.0, 30),
            (599.0, 50),  # bin 0: mean of .1, .3, .5
            (750.0, 70),  # bin 2
            (2450.0, 90),  # bin 19: [2400, 2500)
            (2500.0, 100),  # last sample: excluded
        ]
    )
    expected = [0.0] * N_WINDOWS
    expected[0], expected[2], expected[19] = 0.3, 0.7, 0.9
    out = per_query(track, 100, P)
    assert _windows(out, P) == pytest.approx(expected)
    assert out[f"{P}normalized_avg_char_position"] == pytest.approx((10 + 30 + 50 + 70 + 90 + 100) / 600)


def test_per_query_one_looking_row_has_no_windows_ratio_or_variance() -> None:
    track = _track([(0.0, OFF), (100.0, 30), (300.0, -1), (900.0, OFF)])
    out = per_query(track, 60, P)
    assert out[f"{P}data_points"] == 4
    assert out[f"{P}overall_attention_ratio"] == pytest.approx(0.25)
    assert out[f"{P}focused_engagement_time"] == 0.0
    assert out[f"{P}focused_engagement_ratio"] == 0.0
    assert out[f"{P}normalized_char_position_variance"] == 0.0
    assert out[f"{P}normalized_avg_char_position"] == pytest.approx(0.5)
    assert out[f"{P}reading_completion_ratio"] == pytest.approx(0.5)
    assert _windows(out, P) == [0.0] * N_WINDOWS


def test_per_query_zero_span_gives_zero_windows_and_ratio() -> None:
    track = _track([(700.0, 20), (700.0, 60)])
    out = per_query(track, 100, P)
    assert out[f"{P}focused_engagement_time"] == 0.0
    assert out[f"{P}focused_engagement_ratio"] == 0.0
    assert _windows(out, P) == [0.0] * N_WINDOWS
    # two rows: mean .4, deviations +-.2, (.04 + .04) / 1
    assert out[f"{P}normalized_char_position_variance"] == pytest.approx(0.08)


def test_per_query_reading_completion_is_capped_at_one() -> None:
    out = per_query(_track([(0.0, 10), (100.0, 250)]), 100, P)
    assert out[f"{P}reading_completion_ratio"] == 1.0


def test_per_query_without_looking_rows_only_counts_data_points() -> None:
    out = per_query(_track([(0.0, OFF), (100.0, -1)]), 100, P)
    assert out[f"{P}data_points"] == 2
    assert out[f"{P}overall_attention_ratio"] == 0.0
    assert all(v == 0.0 for k, v in out.items() if k != f"{P}data_points")


def test_per_query_without_rows_is_all_zero() -> None:
    out = per_query(Track.empty(), 100, P)
    assert len(out) == 7 + N_WINDOWS
    assert all(v == 0.0 for v in out.values())


def test_counts_by_hand() -> None:
    track = _track([(0.0, OFF), (100.0, 12), (200.0, -1), (300.0, 48)])
    assert counts(track, 96, "gaze", "left") == {
        "gaze_total_entries_left": 4.0,
        "gaze_onscreen_points_left": 3.0,
        "gaze_max_idx_left": 48.0,
        "gaze_max_idx_ratio_left": 0.5,
    }
    empty = counts(Track.empty(), 96, "mouse", "right")
    assert empty["mouse_max_idx_right"] == -1.0
    assert empty["mouse_total_entries_right"] == 0.0


# --- pairwise phase features (spec 3.3) ---------------------------------------------------------------------


def _pairwise_tracks() -> tuple[Track, Track]:
    left = _track(
        [
            (0.0, 5),
            (100.0, 50),
            (200.0, OFF),
            (1500.0, 80),  # last character read on either side: B = 1500, this row is composing
            (2000.0, -1, True),  # looking back at the placeholder
            (2100.0, -1, True),
            (3000.0, OFF),
        ]
    )
    right = _track(
        [
            (0.0, OFF),
            (100.0, 30),
            (1000.0, 60),
            (1500.0, OFF),
            (2500.0, -1, True),
            (4000.0, OFF),
        ]
    )
    return left, right


def _phases(left: Track, right: Track, m: str = "gaze") -> dict[str, float]:
    return pairwise_phases(left, right, m, lookback=(left.placeholder, right.placeholder))


def test_pairwise_phases_by_hand() -> None:
    out = _phases(*_pairwise_tracks())
    # T0 = 0, T1 = 4000, B = 1500: total 4 s, reviewing 1.5 s, composing 2.5 s
    assert out["gaze_composing_duration_s"] == pytest.approx(2.5)
    assert out["gaze_composing_pct"] == pytest.approx(62.5)
    assert out["gaze_detection_method"] == 1.0
    # left reviewing rows (t < 1500): 0, 100 on box, 200 off; engaged = 100 ms
    assert out["gaze_left_reviewing_engaged_time_s"] == pytest.approx(0.1)
    assert out["gaze_left_reviewing_engaged_pct"] == pytest.approx(2.5)
    assert out["gaze_left_reviewing_active_ratio"] == pytest.approx(0.1 / 1.5)
    assert out["gaze_left_reviewing_onscreen_ratio"] == pytest.approx(2 / 3)
    assert out["gaze_left_reviewing_offscreen_ratio"] == pytest.approx(1 / 3)
    assert out["gaze_left_reviewing_entries"] == 2.0
    assert out["gaze_left_max_char_position_reached"] == 50.0  # 80 is at t = B: composing
    # left composing lookback rows: 2000, 2100 -> 100 ms
    assert out["gaze_left_composing_lookback_time_s"] == pytest.approx(0.1)
    assert out["gaze_left_composing_lookback_ratio"] == pytest.approx(0.1 / 2.5)
    # right reviewing rows: 0 off, 100 and 1000 on box -> 900 ms
    assert out["gaze_right_reviewing_engaged_time_s"] == pytest.approx(0.9)
    assert out["gaze_right_reviewing_engaged_pct"] == pytest.approx(22.5)
    assert out["gaze_right_reviewing_active_ratio"] == pytest.approx(0.6)
    assert out["gaze_right_reviewing_onscreen_ratio"] == pytest.approx(2 / 3)
    assert out["gaze_right_reviewing_offscreen_ratio"] == pytest.approx(1 / 3)
    assert out["gaze_right_reviewing_entries"] == 2.0
    assert out["gaze_right_max_char_position_reached"] == 60.0
    # a single lookback sample has no interval after it
    assert out["gaze_right_composing_lookback_time_s"] == 0.0
    assert out["gaze_right_composing_lookback_ratio"] == 0.0
    # comparisons, left against right
    assert out["gaze_comparison_reviewing_time_ratio"] == pytest.approx(0.1 / 0.901)
    assert out["gaze_comparison_reviewing_time_diff"] == pytest.approx(-0.8)
    assert out["gaze_comparison_which_side_longer_reviewing"] == -1.0
    assert out["gaze_comparison_reviewing_activity_ratio"] == pytest.approx((0.1 / 1.5) / 0.601)
    assert out["gaze_comparison_reviewing_activity_diff"] == pytest.approx(0.1 / 1.5 - 0.6)
    assert out["gaze_comparison_which_side_more_active_reviewing"] == -1.0
    assert out["gaze_comparison_composing_lookback_ratio"] == 100.0  # 0.1 / 0.001, capped
    assert out["gaze_comparison_composing_lookback_diff"] == pytest.approx(0.1)
    assert out["gaze_comparison_which_side_read_further"] == -1.0


def test_pairwise_phases_which_side_flips_when_sides_swap() -> None:
    left, right = _pairwise_tracks()
    out = _phases(right, left, "mouse")
    assert out["mouse_comparison_which_side_longer_reviewing"] == 1.0
    assert out["mouse_comparison_which_side_more_active_reviewing"] == 1.0
    assert out["mouse_comparison_which_side_read_further"] == 1.0
    assert out["mouse_comparison_reviewing_time_ratio"] == pytest.approx(0.9 / 0.101)
    assert out["mouse_comparison_composing_lookback_ratio"] == 0.0


def test_pairwise_phases_ties_count_as_right() -> None:
    same = _track([(0.0, 10), (100.0, 20), (300.0, OFF)])
    out = _phases(same, same)
    assert out["gaze_comparison_which_side_longer_reviewing"] == -1.0
    assert out["gaze_comparison_which_side_more_active_reviewing"] == -1.0
    assert out["gaze_comparison_which_side_read_further"] == -1.0


def test_pairwise_max_char_is_zero_without_on_box_reviewing_rows() -> None:
    left = _track([(0.0, OFF), (500.0, OFF), (900.0, OFF)])
    right = _track([(0.0, 10), (400.0, 30), (900.0, OFF)])  # B = 400
    out = _phases(left, right)
    assert out["gaze_left_max_char_position_reached"] == 0.0
    assert out["gaze_left_reviewing_entries"] == 0.0
    assert out["gaze_left_reviewing_onscreen_ratio"] == 0.0
    assert out["gaze_left_reviewing_offscreen_ratio"] == 1.0
    assert out["gaze_right_max_char_position_reached"] == 10.0
    assert out["gaze_comparison_which_side_read_further"] == -1.0


def test_pairwise_max_char_can_be_minus_one() -> None:
    # on-box reviewing rows exist but none has a character (spec 11: "can be -1")
    left = _track([(0.0, -1), (100.0, -1), (900.0, OFF)])
    right = _track([(0.0, 10), (400.0, 30), (900.0, OFF)])
    assert _phases(left, right)["gaze_left_max_char_position_reached"] == -1.0


def test_pairwise_phases_are_zero_without_any_character() -> None:
    left = _track([(0.0, -1), (100.0, OFF)])
    right = _track([(0.0, OFF), (400.0, -1, True)])
    out = _phases(left, right)
    assert out["gaze_detection_method"] == 0.0
    assert all(v == 0.0 for v in out.values())


def test_pairwise_phases_are_zero_when_no_reading_was_detected() -> None:
    left, right = _pairwise_tracks()
    out = pairwise_phases(left, right, "gaze", lookback=(left.placeholder, right.placeholder), reading=False)
    assert all(v == 0.0 for v in out.values())


def test_pairwise_lookback_uses_the_given_flags_not_the_track_placeholder() -> None:
    left, right = _pairwise_tracks()
    flags_left = np.zeros(len(left), dtype=np.bool_)
    flags_left[[3, 6]] = True  # t = 1500 and 3000 -> 1000 ms (capped from 1500)
    out = pairwise_phases(left, right, "gaze", lookback=(flags_left, np.zeros(len(right), dtype=np.bool_)))
    assert out["gaze_left_composing_lookback_time_s"] == pytest.approx(1.0)
    assert out["gaze_left_composing_lookback_ratio"] == pytest.approx(1.0 / 2.5)


def _cross_inputs(
    g_left: float, g_right: float, m_left: float, m_right: float
) -> tuple[dict[str, float], dict[str, float]]:
    gaze = {
        "gaze_left_reviewing_engaged_time_s": g_left,
        "gaze_right_reviewing_engaged_time_s": g_right,
        "gaze_comparison_reviewing_time_ratio": safe_ratio(g_left, g_right),
    }
    mouse = {
        "mouse_left_reviewing_engaged_time_s": m_left,
        "mouse_right_reviewing_engaged_time_s": m_right,
        "mouse_comparison_reviewing_time_ratio": safe_ratio(m_left, m_right),
    }
    return gaze, mouse


def test_cross_modality_ratios() -> None:
    out = pairwise_cross(*_cross_inputs(3.0, 1.0, 2.0, 0.0))
    assert out["cross_modality_left_reviewing_duration_ratio_gaze_mouse"] == pytest.approx(3.0 / 2.001)
    assert out["cross_modality_right_reviewing_duration_ratio_gaze_mouse"] == 100.0  # 1 / 0.001 capped


@pytest.mark.parametrize(
    ("times", "agreement"),
    [
        ((3.0, 1.0, 2.0, 1.0), 1.0),  # both modalities favour the left
        ((1.0, 3.0, 1.0, 2.0), 1.0),  # both favour the right
        ((3.0, 1.0, 1.0, 2.0), -1.0),  # they disagree
        ((1.0, 3.0, 2.0, 1.0), -1.0),
        ((0.0, 0.0, 0.0, 0.0), 1.0),  # both ratios are 0 < 1
        ((1.001, 1.0, 3.0, 1.0), -1.0),  # gaze ratio exactly 1: neither above nor below
    ],
)
def test_cross_modality_agreement(times: tuple[float, float, float, float], agreement: float) -> None:
    out = pairwise_cross(*_cross_inputs(*times))
    assert out["cross_modality_preference_agreement_gaze_mouse"] == agreement


# --- pointwise phase features (spec 3.4) --------------------------------------------------------------------


def _pointwise_track() -> Track:
    return _track(
        [
            (0.0, OFF),
            (100.0, 10),
            (200.0, OFF),
            (300.0, -1),
            (400.0, 40),
            (500.0, 20),
            (600.0, OFF),
            (700.0, -1),
            (800.0, OFF),
        ]
    )


def test_pointwise_phases_closed_composing_interval() -> None:
    out = pointwise_phases(_pointwise_track(), "gaze", (100.0, 400.0), (400.0, 800.0))
    # reviewing [100, 400]: 100 on, 200 off, 300 on, 400 on -> active 3/4; characters 10, 40
    # composing [400, 800): 400 on+char, 500 on+char, 600 off, 700 on without char
    expected = {
        "reviewing_duration_s": 0.3,
        "composing_duration_s": 0.4,
        "reviewing_pct": 300 / 7,
        "composing_pct": 400 / 7,
        "detection_method": 1.0,
        "max_char_position_reached": 40.0,
        "reviewing_active_ratio": 0.75,
        "reviewing_offscreen_ratio": 0.25,
        "composing_active_ratio": 0.75,
        "composing_offscreen_ratio": 0.25,
        "composing_lookback_ratio": 0.5,
        "composing_thinking_ratio": 0.25,
        "reviewing_composing_duration_ratio": 0.3 / 0.401,
        "reviewing_composing_activity_ratio": 0.75 / 0.751,
        "composing_reviewing_activity_diff": 0.0,
        "offscreen_increase": 0.0,
        "active_time_reviewing_s": 0.3 * 0.75,
        "active_time_composing_s": 0.4 * 0.75,
        "offscreen_time_reviewing_s": 0.3 * 0.25,
        "offscreen_time_composing_s": 0.4 * 0.25,
        "lookback_time_s": 0.4 * 0.5,
        "thinking_time_s": 0.4 * 0.25,
    }
    assert out == pytest.approx({f"gaze_{k}": v for k, v in expected.items()})


def test_pointwise_phases_open_start_composing_interval() -> None:
    out = pointwise_phases(_pointwise_track(), "mouse", (100.0, 400.0), (400.0, 800.0), composing_open_start=True)
    # composing (400, 800]: 500 on+char, 600 off, 700 on without char, 800 off
    expected = {
        "reviewing_active_ratio": 0.75,
        "composing_active_ratio": 0.5,
        "composing_offscreen_ratio": 0.5,
        "composing_lookback_ratio": 0.25,
        "composing_thinking_ratio": 0.25,
        "reviewing_composing_activity_ratio": 0.75 / 0.501,
        "composing_reviewing_activity_diff": -0.25,
        "offscreen_increase": 0.25,
        "active_time_reviewing_s": 0.225,
        "active_time_composing_s": 0.2,
        "offscreen_time_reviewing_s": 0.075,
        "offscreen_time_composing_s": 0.2,
        "lookback_time_s": 0.1,
        "thinking_time_s": 0.1,
    }
    assert {k: out[f"mouse_{k}"] for k in expected} == pytest.approx(expected)


def test_pointwise_phases_without_intervals_are_zero() -> None:
    out = pointwise_phases(_pointwise_track(), "gaze", None, None)
    assert len(out) == 22
    assert all(v == 0.0 for v in out.values())


def test_pointwise_cross_is_gaze_over_mouse() -> None:
    gaze = pointwise_phases(_pointwise_track(), "gaze", (100.0, 400.0), (400.0, 800.0))
    mouse = pointwise_phases(_pointwise_track(), "mouse", (100.0, 300.0), (300.0, 800.0))
    out = pointwise_cross(gaze, mouse)
    assert out["cross_modality_reviewing_duration_ratio_gaze_mouse"] == pytest.approx(0.3 / 0.201)
    assert out["cross_modality_composing_duration_ratio_gaze_mouse"] == pytest.approx(0.4 / 0.501)


# --- page time across reloads -------------------------------------------------------------------------------


def test_continuous_time_continues_from_the_previous_sample_at_each_reload() -> None:
    t = np.array([0.0, 100.0, 200.0, 5.0, 50.0, 10.0, 20.0])
    out = continuous_time(t, np.array([3, 5], dtype=np.int64))
    # reload at 3: + 200; reload at 5: + (50 + 200)
    np.testing.assert_allclose(out, [0.0, 100.0, 200.0, 205.0, 250.0, 260.0, 270.0])


def test_continuous_time_back_to_back_reloads() -> None:
    t = np.array([40.0, 10.0, 7.0, 9.0])
    out = continuous_time(t, np.array([1, 2], dtype=np.int64))
    np.testing.assert_allclose(out, [40.0, 50.0, 57.0, 59.0])


def test_continuous_time_without_reloads_is_unchanged() -> None:
    t = np.array([3.0, 1.0, 2.0])
    np.testing.assert_array_equal(continuous_time(t, np.zeros(0, dtype=np.int64)), t)
