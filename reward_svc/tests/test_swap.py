"""Left/right mirroring of pairwise features and the swap-augmented estimator."""

# ruff: noqa: N803  (scikit-learn's convention: X is the feature matrix)

from __future__ import annotations

import numpy as np
import pytest

from reward_svc.model.estimators import ReferenceForest, SwapAugmented
from reward_svc.model.swap import RATIO_INF, partner, swap_plan, symmetric_closure

NAMES = [
    "user_query_length",
    "response_A_gaze_window_001",
    "response_B_gaze_window_001",
    "gaze_max_idx_left",
    "gaze_max_idx_right",
    "mouse_left_reviewing_entries",
    "mouse_right_reviewing_entries",
    "cross_modality_left_reviewing_duration_ratio_gaze_mouse",
    "cross_modality_right_reviewing_duration_ratio_gaze_mouse",
    "gaze_comparison_reviewing_time_diff",
    "gaze_comparison_reviewing_time_ratio",
    "mouse_comparison_which_side_read_further",
    "cross_modality_preference_agreement_gaze_mouse",
    "camera_green",
]


def test_partner_names() -> None:
    assert partner("response_A_gaze_window_001") == "response_B_gaze_window_001"
    assert partner("response_B_mouse_overall_attention_ratio") == "response_A_mouse_overall_attention_ratio"
    assert partner("gaze_max_idx_ratio_left") == "gaze_max_idx_ratio_right"
    assert partner("gaze_left_reviewing_engaged_time_s") == "gaze_right_reviewing_engaged_time_s"
    assert partner("mouse_right_max_char_position_reached") == "mouse_left_max_char_position_reached"
    assert partner("user_query_length") is None
    assert partner("gaze_comparison_reviewing_time_diff") is None


def test_swap_on_hand_built_rows() -> None:
    row = np.array([[50, 0.1, 0.9, 10, 200, 3, 7, 2.0, 0.5, -190.0, 4.0, 1.0, -1.0, 33]], dtype=np.float64)
    out = swap_plan(NAMES).apply(row)[0]
    expected = [50, 0.9, 0.1, 200, 10, 7, 3, 0.5, 2.0, 190.0, 0.25, -1.0, -1.0, 33]
    np.testing.assert_allclose(out, expected)


def test_ratio_zero_and_cap_round_trip() -> None:
    plan = swap_plan(["a_comparison_reviewing_time_ratio"])
    x = np.array([[0.0], [100.0], [np.nan], [1e-3]])
    once = plan.apply(x)
    np.testing.assert_allclose(once[:, 0], [RATIO_INF, 0.01, np.nan, 1000.0])
    np.testing.assert_allclose(plan.apply(once), x, rtol=1e-12)


def test_swapping_twice_is_identity() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, len(NAMES)))
    X[:, NAMES.index("gaze_comparison_reviewing_time_ratio")] = rng.uniform(0, 100, 50)
    plan = swap_plan(NAMES)
    np.testing.assert_allclose(plan.apply(plan.apply(X)), X, rtol=1e-12, atol=0)


def test_missing_partner_is_refused_and_closure_adds_it() -> None:
    with pytest.raises(ValueError, match="no partner"):
        swap_plan(["gaze_max_idx_left", "user_query_length"])
    closed = symmetric_closure(["gaze_max_idx_left", "user_query_length"], ["gaze_max_idx_right", "x"])
    assert closed == ["gaze_max_idx_left", "user_query_length", "gaze_max_idx_right"]
    swap_plan(closed)


class _Recorder(ReferenceForest):
    """A forest that remembers what it was trained on."""

    def fit(self, X, y):  # type: ignore[no-untyped-def]
        self.seen_X_ = np.array(X)
        self.seen_y_ = np.array(y)
        return super().fit(X, y)


def test_swap_augmented_trains_on_mirrors_with_flipped_labels() -> None:
    rng = np.random.default_rng(1)
    X = rng.uniform(1, 10, size=(40, len(NAMES)))
    y = rng.integers(0, 2, 40)
    model = SwapAugmented(_Recorder(n_estimators=10), NAMES).fit(X, y)
    inner = model.estimator_
    assert inner.seen_X_.shape == (80, len(NAMES))
    np.testing.assert_array_equal(inner.seen_y_, np.concatenate([y, 1 - y]))
    np.testing.assert_allclose(inner.seen_X_[40:], swap_plan(NAMES).apply(X))


def test_swap_augmented_has_no_position_bias() -> None:
    rng = np.random.default_rng(2)
    X = rng.uniform(1, 10, size=(60, len(NAMES)))
    y = (X[:, NAMES.index("gaze_max_idx_right")] > X[:, NAMES.index("gaze_max_idx_left")]).astype(int)
    model = SwapAugmented(ReferenceForest(n_estimators=20), NAMES).fit(X, y)
    p = model.predict_proba(X)[:, 1]
    p_mirror = model.predict_proba(swap_plan(NAMES).apply(X))[:, 1]
    np.testing.assert_allclose(p + p_mirror, 1.0, atol=1e-12)
    assert np.mean((p > 0.5) == y) > 0.8
