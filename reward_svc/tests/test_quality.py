"""Session quality score and abstention gate."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reward_svc.model.quality import SessionQuality, session_components


def test_components_on_a_hand_built_session() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["w1", "w1", "w2"],
            "task_id": ["1", "1", "3"],
            "mode": ["pairwise"] * 3,
            "samples": [100, 300, 0],
            "gaze_onscreen_points_left": [10.0, 30.0, 0.0],
            "gaze_onscreen_points_right": [10.0, 10.0, 0.0],
            "gaze_total_entries_left": [50.0, 50.0, 0.0],
            "gaze_total_entries_right": [50.0, 50.0, 0.0],
            "camera_green_ratio": [0.5, 1.0, 0.0],
            "gaze_max_idx_ratio_left": [0.2, 1.4, 0.0],
            "gaze_max_idx_ratio_right": [0.4, 0.6, 0.0],
        }
    )
    c = session_components(frame).set_index("user_id")
    assert c.loc["w1", "in_box"] == 60 / 200
    assert c.loc["w1", "head_in_box"] == 0.75
    assert c.loc["w1", "coverage"] == (0.3 + 0.8) / 2  # ratios above 1 are clipped
    assert c.loc["w1", "samples"] == np.log1p(200)
    assert c.loc["w2", "in_box"] == 0.0  # no gaze entries: nothing in the boxes
    assert c.loc["w1", "questions"] == 2


def test_gate_threshold_comes_from_training_sessions(frame: pd.DataFrame) -> None:
    train = frame[frame["user_id"] != "worker_011"]
    gate = SessionQuality(quantile=0.25).fit(train)
    scores = gate.session_scores(train)
    assert gate.threshold_ == np.quantile(scores["score"], 0.25)
    assert 0.6 <= scores["keep"].mean() <= 0.8
    _, keep = gate.row_scores(frame)
    assert keep.shape == (len(frame),)
    # worker_000's first session (its first four questions) has no samples at all: the gate abstains there.
    empty = ((frame["user_id"] == "worker_000") & (frame["task_id"] == "100")).to_numpy()
    assert (frame.loc[empty, "samples"] == 0).all()
    assert not keep[empty].any()
    described = gate.describe()
    assert described["quantile"] == 0.25
    assert set(described["components"]) == {"in_box", "head_in_box", "coverage", "samples"}


def test_session_without_samples_abstains() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b", "c", "d"],
            "task_id": ["1", "2", "3", "4"],
            "mode": ["pairwise"] * 4,
            "samples": [0, 500, 600, 700],
            "camera_green_ratio": [1.0, 0.5, 0.6, 0.7],
        }
    )
    gate = SessionQuality(quantile=0.0).fit(frame)
    _, keep = gate.row_scores(frame)
    assert keep.tolist() == [False, True, True, True]
