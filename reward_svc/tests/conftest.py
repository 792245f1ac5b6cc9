"""Fixtures for the reward-model tests: a synthetic pairwise table (no data needed) and the dev subset's tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_svc.features.sets import PAIRWISE_IF
from reward_svc.model.swap import partner, symmetric_closure
from reward_svc.registry import ModelRow, Registry

SIDED = ("gaze_max_idx", "gaze_onscreen_points", "gaze_total_entries", "gaze_max_idx_ratio", "response_length")


def synthetic_frame(n_users: int = 12, rows_per_user: int = 12, seed: int = 0) -> pd.DataFrame:
    """Pairwise rows shaped like the extractor's table; the label follows how much further the right side was read."""
    rng = np.random.default_rng(seed)
    rows = []
    qid = 1000
    for u in range(n_users):
        bias = rng.normal(0, 1)  # a per-worker reading speed, shared by both sides
        for k in range(rows_per_user):
            qid += 1
            left = {name: float(rng.gamma(2.0, 50.0) * np.exp(bias)) for name in SIDED}
            right = {name: float(rng.gamma(2.0, 50.0) * np.exp(bias)) for name in SIDED}
            for side in (left, right):
                side["gaze_total_entries"] = side["gaze_onscreen_points"] + float(rng.integers(0, 200))
                side["gaze_max_idx_ratio"] = float(rng.uniform(0, 1))
            margin = (right["gaze_max_idx"] - left["gaze_max_idx"]) / (right["gaze_max_idx"] + left["gaze_max_idx"])
            label = int(margin + rng.normal(0, 0.3) > 0)
            a_att, b_att = rng.uniform(0, 1, 2)
            row = {
                "query_id": qid,
                "user_id": f"worker_{u:03d}",
                "task_id": str(100 + u * 2 + k // 4),
                "mode": "pairwise",
                "label": label if k % 11 else None,  # a few unlabelled rows
                "turn": k % 4,
                "samples": 0 if (u == 0 and k < 4) else int(rng.integers(100, 3000)),
                "user_query_length": float(rng.integers(10, 200)),
                "response_A_gaze_overall_attention_ratio": float(a_att),
                "response_B_gaze_overall_attention_ratio": float(b_att),
                "gaze_comparison_reviewing_time_diff": float(left["gaze_max_idx"] - right["gaze_max_idx"]),
                "gaze_comparison_reviewing_time_ratio": float(
                    min(left["gaze_max_idx"] / (right["gaze_max_idx"] + 0.001), 100)
                ),
                "gaze_comparison_which_side_read_further": float(np.sign(left["gaze_max_idx"] - right["gaze_max_idx"])),
                "camera_green": float(rng.integers(0, 500)),
                "camera_green_ratio": float(rng.uniform(0.3, 1.0)),
            }
            for name in SIDED:
                row[f"{name}_left"] = left[name]
                row[f"{name}_right"] = right[name]
            rows.append(row)
    frame = pd.DataFrame(rows)
    # Noise columns for the rest of the paper's IF list (and their mirror columns), so every feature set resolves.
    extra = [n for n in symmetric_closure(list(PAIRWISE_IF), _mirrors(PAIRWISE_IF)) if n not in frame.columns]
    noise = pd.DataFrame(rng.uniform(0, 1, size=(len(frame), len(extra))), columns=extra, index=frame.index)
    frame = pd.concat([frame, noise], axis=1)
    frame["label"] = frame["label"].astype("Int64")
    return frame


def _mirrors(names: tuple[str, ...]) -> list[str]:
    return [m for n in names if (m := partner(n)) is not None]


@pytest.fixture
def frame() -> pd.DataFrame:
    return synthetic_frame()


@pytest.fixture(scope="session")
def dev_tables(ifllm_dir: Path) -> dict[str, pd.DataFrame]:
    """Both feature modes of the dev subset, extracted lazily once per test process."""
    from reward_svc.model.data import load_frame

    cache: dict[str, pd.DataFrame] = {}

    class Tables(dict):  # type: ignore[type-arg]
        def __missing__(self, mode: str) -> pd.DataFrame:
            cache[mode] = load_frame(ifllm_dir, feature_mode=mode, workers=2)
            self[mode] = cache[mode]
            return cache[mode]

    return Tables()


@pytest.fixture(params=["sqlite", "postgres"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    """An empty model registry on SQLite, or on the session's PostgreSQL database emptied first."""
    if request.param == "sqlite":
        reg = Registry(f"sqlite:///{tmp_path / 'reward.db'}")
    else:
        reg = Registry(request.getfixturevalue("postgres_url"))
        with reg.session() as s:  # each test starts empty
            for row in reg.list():
                s.delete(s.get(ModelRow, row.id))
            s.commit()
    yield reg
    reg.close()
