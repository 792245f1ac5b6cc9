"""Per-session data quality from the feature table, and the abstention gate derived from training sessions.

The table has no calibration accuracy, so a session (one worker on one topic) is judged by what it does have:

- `in_box`: share of gaze samples that fall inside a response box (spec 5's "response score"),
- `head_in_box`: share of webcam ticks with the head inside the green box (`camera_green_ratio`),
- `coverage`: how far into the responses the gaze got (`gaze_max_idx_ratio_*`, clipped to [0, 1], spec 5's
  "max index score"),
- `samples`: behaviour samples per question (log scale).

Each component becomes its percentile among the *training* sessions (empirical CDF), and the quality score is the
mean of those percentiles, in [0, 1]. The gate abstains on sessions scoring below the `quantile` of the training
sessions' scores (default: the worst 10%), and always on sessions without behaviour samples. No worker list is
involved (spec 5: the reference's 24 exclusions cannot be re-derived from its stated thresholds).

The threshold only earns its place if it transfers: `train` checks it on grouped folds (accuracy on kept rows
above accuracy on abstained rows in every fold) and builds the gate with `enabled=False` when it does not. A disabled
gate still scores quality and still abstains on sessions with no behaviour samples at all (nothing was measured).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

__all__ = ["COMPONENTS", "SessionQuality", "quality_columns", "session_components"]

COMPONENTS = ("in_box", "head_in_box", "coverage", "samples")
SESSION_KEYS = ["user_id", "task_id"]


def quality_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of `frame` the quality score reads (so folds can ship a slim copy to worker processes)."""
    wanted = {"user_id", "task_id", "mode", "samples", "camera_green_ratio"}
    prefixes = ("gaze_onscreen_points_", "gaze_total_entries_", "gaze_max_idx_ratio_")
    return [c for c in frame.columns if c in wanted or (c.startswith(prefixes) and not c.startswith("prev_"))]


def _sum(frame: pd.DataFrame, names: list[str]) -> pd.Series:
    present = [n for n in names if n in frame.columns]
    if not present:
        return pd.Series(np.nan, index=frame.index)
    return frame[present].fillna(0.0).sum(axis=1)


def session_components(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (user_id, task_id) with the four raw components (NaN where the table lacks the columns)."""
    sides = ["left", "right"] if (frame["mode"] == "pairwise").any() else ["left"]
    rows = pd.DataFrame(
        {
            "user_id": frame["user_id"].to_numpy(),
            "task_id": frame["task_id"].to_numpy(),
            "onscreen": _sum(frame, [f"gaze_onscreen_points_{s}" for s in sides]).to_numpy(),
            "entries": _sum(frame, [f"gaze_total_entries_{s}" for s in sides]).to_numpy(),
            "head": frame["camera_green_ratio"].to_numpy() if "camera_green_ratio" in frame else np.nan,
            "coverage": (
                frame[[f"gaze_max_idx_ratio_{s}" for s in sides]].clip(0.0, 1.0).mean(axis=1).to_numpy()
                if all(f"gaze_max_idx_ratio_{s}" in frame for s in sides)
                else np.nan
            ),
            "samples": frame["samples"].to_numpy(dtype=np.float64),
        }
    )
    grouped = rows.groupby(SESSION_KEYS, sort=True)
    out = pd.DataFrame(
        {
            "in_box": grouped["onscreen"].sum() / grouped["entries"].sum().replace(0.0, np.nan),
            "head_in_box": grouped["head"].mean(),
            "coverage": grouped["coverage"].mean(),
            "samples": np.log1p(grouped["samples"].mean()),
            "questions": grouped.size(),
        }
    )
    # A session with no gaze entries has nothing inside the boxes.
    out.loc[grouped["entries"].sum() == 0, "in_box"] = 0.0
    return out.reset_index()


class SessionQuality(BaseEstimator):
    """Quality score per session (mean training-ECDF percentile of the components) and the abstention gate."""

    def __init__(self, quantile: float = 0.1, enabled: bool = True) -> None:
        self.quantile = quantile
        self.enabled = enabled

    @property
    def active(self) -> bool:
        """Whether the threshold abstains (gates pickled before `enabled` existed were always on)."""
        return bool(getattr(self, "enabled", True))

    def fit(self, frame: pd.DataFrame) -> SessionQuality:
        """Learn the component distributions and the threshold from the sessions in `frame` (training rows)."""
        sessions = session_components(frame)
        self.reference_ = {
            c: np.sort(sessions[c].dropna().to_numpy(dtype=np.float64)) for c in COMPONENTS if sessions[c].notna().any()
        }
        scores = self._score(sessions)
        self.threshold_ = float(np.quantile(scores, self.quantile)) if len(scores) else 0.0
        self.component_quantiles_ = {c: float(np.quantile(v, self.quantile)) for c, v in self.reference_.items()}
        self.n_sessions_ = len(sessions)
        return self

    def _score(self, sessions: pd.DataFrame) -> npt.NDArray[np.float64]:
        parts = []
        for c, ref in self.reference_.items():
            values = sessions[c].to_numpy(dtype=np.float64)
            pct = np.searchsorted(ref, values, side="right") / max(len(ref), 1)
            parts.append(np.where(np.isnan(values), 0.5, pct))  # unknown -> neutral
        if not parts:
            return np.ones(len(sessions))
        return np.asarray(np.mean(parts, axis=0), dtype=np.float64)

    def session_scores(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Components, score and keep flag per session of `frame`."""
        check_is_fitted(self, "reference_")
        sessions = session_components(frame)
        sessions["score"] = self._score(sessions)
        no_data = sessions["samples"].fillna(0.0) <= 0.0
        above = sessions["score"] >= self.threshold_ if self.active else True
        sessions["keep"] = above & ~no_data
        return sessions

    def row_scores(self, frame: pd.DataFrame) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """(score, keep) for every row of `frame`, from its session."""
        sessions = self.session_scores(frame).set_index(SESSION_KEYS)
        index = pd.MultiIndex.from_arrays([frame["user_id"].to_numpy(), frame["task_id"].to_numpy()])
        found = sessions.reindex(index)
        return found["score"].to_numpy(dtype=np.float64), found["keep"].to_numpy(dtype=np.bool_)

    def describe(self) -> dict[str, Any]:
        check_is_fitted(self, "reference_")
        return {
            "score": "mean over components of the training-session percentile",
            "enabled": self.active,
            "components": list(self.reference_),
            "quantile": self.quantile,
            "threshold": round(self.threshold_, 4),
            "component_quantiles": {k: round(v, 4) for k, v in self.component_quantiles_.items()},
            "training_sessions": self.n_sessions_,
        }
