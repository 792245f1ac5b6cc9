"""Feature formulas of spec section 3, on numpy columns. No I/O, no web imports.

Every function takes the samples of one box and modality (a `Track`) or a pair of them and returns a flat
dict of named floats. Names follow the reference's columns so tables can be compared directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "CAP_MS",
    "EPS",
    "N_WINDOWS",
    "RATIO_CAP",
    "Track",
    "capped_engaged_ms",
    "counts",
    "pairwise_phases",
    "per_query",
    "pointwise_phases",
    "safe_ratio",
]

#: Interval cap of the "one-second smoothing" (spec 3.1).
CAP_MS = 1000.0
#: Time windows per response (spec 3.1).
N_WINDOWS = 20
EPS = 0.001
RATIO_CAP = 100.0

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Track:
    """Samples of one modality over one response box, in time order."""

    x: F64
    y: F64
    idx: npt.NDArray[np.int64]
    """Character index, -1 when none."""
    t: F64
    """Page time in ms (continuous across reloads in the default mode)."""
    placeholder: npt.NDArray[np.bool_]
    """In-box samples showing the waiting placeholder text instead of an answer."""
    head: npt.NDArray[np.int8] | None = None
    """Head-in-box flag 1 / 0 / -1 unknown (gaze only)."""

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @property
    def in_box(self) -> npt.NDArray[np.bool_]:
        mask: npt.NDArray[np.bool_] = ~((self.x == -1) & (self.y == -1))
        return mask

    @property
    def looking(self) -> npt.NDArray[np.bool_]:
        """Spec 3.2 'looking': both coordinates valid and a character under the point."""
        mask: npt.NDArray[np.bool_] = (self.x != -1) & (self.y != -1) & (self.idx != -1)
        return mask

    def sorted(self) -> Track:
        order = np.argsort(self.t, kind="stable")
        return Track(
            x=self.x[order],
            y=self.y[order],
            idx=self.idx[order],
            t=self.t[order],
            placeholder=self.placeholder[order],
            head=None if self.head is None else self.head[order],
        )

    @staticmethod
    def empty() -> Track:
        f = np.zeros(0, dtype=np.float64)
        return Track(x=f, y=f, idx=np.zeros(0, np.int64), t=f, placeholder=np.zeros(0, np.bool_))


def safe_ratio(a: float, b: float) -> float:
    """min(a / (b + 0.001), 100): the reference's ratio (capped above only)."""
    return float(min(a / (b + EPS), RATIO_CAP))


def capped_engaged_ms(t: F64) -> float:
    """E = sum of min(t[i+1] - t[i], 1000) over sorted times; the last sample contributes nothing."""
    if t.size < 2:
        return 0.0
    return float(np.minimum(np.diff(t), CAP_MS).sum())


def per_query(track: Track, length: int, prefix: str) -> dict[str, float]:
    """Spec 3.2 for one side and modality: attention, engaged time, character positions, 20 time windows."""
    out = dict.fromkeys(
        [
            f"{prefix}focused_engagement_ratio",
            f"{prefix}focused_engagement_time",
            f"{prefix}overall_attention_ratio",
            f"{prefix}normalized_avg_char_position",
            f"{prefix}reading_completion_ratio",
            f"{prefix}normalized_char_position_variance",
            f"{prefix}data_points",
        ]
        + [f"{prefix}window_{i:03d}" for i in range(N_WINDOWS)],
        0.0,
    )
    n = len(track)
    if n == 0:
        return out
    look = track.looking
    t = track.t[look]
    pos = track.idx[look].astype(np.float64)
    out[f"{prefix}data_points"] = float(n)
    out[f"{prefix}overall_attention_ratio"] = float(look.sum()) / n
    if t.size == 0:
        return out
    norm = pos / length if length > 0 else np.zeros_like(pos)
    engaged = capped_engaged_ms(t)
    span = float(t[-1] - t[0])
    out[f"{prefix}focused_engagement_time"] = engaged
    out[f"{prefix}focused_engagement_ratio"] = engaged / span if t.size > 1 and span > 0 else 0.0
    out[f"{prefix}normalized_avg_char_position"] = float(norm.mean())
    out[f"{prefix}normalized_char_position_variance"] = float(norm.var(ddof=1)) if norm.size >= 2 else 0.0
    out[f"{prefix}reading_completion_ratio"] = float(min(1.0, pos.max() / length)) if length > 0 else 0.0
    if t.size >= 2 and span > 0:
        # Bin i is [t0 + i*w, t0 + (i+1)*w) with w = span / 20, evaluated exactly as the reference does: the
        # last sample is usually outside the half-open last bin, except where t0 + 20*w rounds above t_last.
        width = span / N_WINDOWS
        steps = np.arange(N_WINDOWS + 1) * width
        lo, hi = t[0] + steps[:-1], t[0] + steps[1:]
        inside = (t[None, :] >= lo[:, None]) & (t[None, :] < hi[:, None])
        hits = inside.sum(axis=1)
        sums = inside @ norm
        means = np.divide(sums, hits, out=np.zeros(N_WINDOWS), where=hits > 0)
        for i in range(N_WINDOWS):
            out[f"{prefix}window_{i:03d}"] = float(means[i])
    return out


def counts(track: Track, length: int, modality: str, side: str) -> dict[str, float]:
    """Spec 3.5 per side: total records, in-box points, max character and its ratio to the length."""
    max_idx = float(track.idx.max()) if len(track) else -1.0
    max_idx = max(max_idx, -1.0)
    return {
        f"{modality}_total_entries_{side}": float(len(track)),
        f"{modality}_onscreen_points_{side}": float(track.in_box.sum()),
        f"{modality}_max_idx_{side}": max_idx,
        f"{modality}_max_idx_ratio_{side}": max_idx / length if length > 0 else 0.0,
    }


def _share(mask: npt.NDArray[np.bool_]) -> float:
    return float(mask.mean()) if mask.size else 0.0


def pairwise_phases(
    left: Track,
    right: Track,
    modality: str,
    *,
    lookback: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]],
    reading: bool | None = None,
) -> dict[str, float]:
    """Spec 3.3 for one modality: reviewing (until the last read character on either side) vs composing.

    `lookback` flags the samples counted as looking back at the placeholder during composing (the reference
    uses its is_experimental_text flag; the default mode only real placeholder sightings). `reading` says
    whether the stage detector found any reading of an answer; without it there are no phases (all zero).
    """
    m = modality
    sides = {"left": (left, lookback[0]), "right": (right, lookback[1])}
    names = [
        "reviewing_engaged_time_s",
        "reviewing_engaged_pct",
        "reviewing_active_ratio",
        "reviewing_onscreen_ratio",
        "reviewing_offscreen_ratio",
        "reviewing_entries",
        "max_char_position_reached",
        "composing_lookback_time_s",
        "composing_lookback_ratio",
    ]
    out: dict[str, float] = {f"{m}_{s}_{n}": 0.0 for s in sides for n in names}
    out |= {f"{m}_composing_duration_s": 0.0, f"{m}_composing_pct": 0.0, f"{m}_detection_method": 0.0}
    comparisons = [
        "reviewing_time_ratio",
        "reviewing_time_diff",
        "which_side_longer_reviewing",
        "reviewing_activity_ratio",
        "reviewing_activity_diff",
        "which_side_more_active_reviewing",
        "composing_lookback_ratio",
        "composing_lookback_diff",
        "which_side_read_further",
    ]
    out |= {f"{m}_comparison_{c}": 0.0 for c in comparisons}
    t_all = np.concatenate([left.t, right.t])
    valid = np.concatenate([left.idx, right.idx]) != -1
    if t_all.size == 0 or not valid.any() or reading is False:
        return out
    t0, t1 = float(t_all.min()), float(t_all.max())
    boundary = float(t_all[valid].max())
    total = (t1 - t0) / 1000
    reviewing = (boundary - t0) / 1000
    composing = (t1 - boundary) / 1000
    per_side: dict[str, dict[str, float]] = {}
    for s, (track, flags) in sides.items():
        rev = track.t < boundary
        comp = ~rev
        on = track.in_box
        engaged = capped_engaged_ms(np.sort(track.t[rev & on])) / 1000
        lookback_s = capped_engaged_ms(np.sort(track.t[comp & flags])) / 1000
        reached = track.idx[rev & on]
        values = {
            "reviewing_engaged_time_s": engaged,
            "reviewing_engaged_pct": engaged / total * 100 if total > 0 else 0.0,
            "reviewing_active_ratio": engaged / reviewing if reviewing > 0 else 0.0,
            "reviewing_onscreen_ratio": _share(on[rev]),
            "reviewing_offscreen_ratio": _share(~on[rev]),
            "reviewing_entries": float((rev & on).sum()),
            "max_char_position_reached": float(reached.max()) if reached.size else 0.0,
            "composing_lookback_time_s": lookback_s,
            "composing_lookback_ratio": lookback_s / composing if composing > 0 else 0.0,
        }
        per_side[s] = values
        out |= {f"{m}_{s}_{n}": v for n, v in values.items()}
    left_v, right_v = per_side["left"], per_side["right"]
    out[f"{m}_composing_duration_s"] = composing
    out[f"{m}_composing_pct"] = composing / total * 100 if total > 0 else 0.0
    out[f"{m}_detection_method"] = 1.0
    for name, key, which in (
        ("reviewing_time", "reviewing_engaged_time_s", "which_side_longer_reviewing"),
        ("reviewing_activity", "reviewing_active_ratio", "which_side_more_active_reviewing"),
        ("composing_lookback", "composing_lookback_time_s", None),
    ):
        a, b = left_v[key], right_v[key]
        out[f"{m}_comparison_{name}_ratio"] = safe_ratio(a, b)
        out[f"{m}_comparison_{name}_diff"] = a - b
        if which:
            out[f"{m}_comparison_{which}"] = 1.0 if a > b else -1.0
    reach_l, reach_r = left_v["max_char_position_reached"], right_v["max_char_position_reached"]
    out[f"{m}_comparison_which_side_read_further"] = 1.0 if reach_l > reach_r else -1.0
    return out


def pairwise_cross(gaze: dict[str, float], mouse: dict[str, float]) -> dict[str, float]:
    """Spec 3.3 cross-modality: gaze/mouse reviewing-time ratios and whether the two modalities agree."""
    out = {
        f"cross_modality_{s}_reviewing_duration_ratio_gaze_mouse": safe_ratio(
            gaze[f"gaze_{s}_reviewing_engaged_time_s"], mouse[f"mouse_{s}_reviewing_engaged_time_s"]
        )
        for s in ("left", "right")
    }
    g = gaze["gaze_comparison_reviewing_time_ratio"]
    m = mouse["mouse_comparison_reviewing_time_ratio"]
    out["cross_modality_preference_agreement_gaze_mouse"] = 1.0 if (g > 1 and m > 1) or (g < 1 and m < 1) else -1.0
    return out


POINTWISE_PHASE_NAMES = [
    "reviewing_duration_s",
    "composing_duration_s",
    "reviewing_pct",
    "composing_pct",
    "detection_method",
    "max_char_position_reached",
    "reviewing_active_ratio",
    "reviewing_offscreen_ratio",
    "composing_active_ratio",
    "composing_offscreen_ratio",
    "composing_lookback_ratio",
    "composing_thinking_ratio",
    "reviewing_composing_duration_ratio",
    "reviewing_composing_activity_ratio",
    "composing_reviewing_activity_diff",
    "offscreen_increase",
    "active_time_reviewing_s",
    "active_time_composing_s",
    "offscreen_time_reviewing_s",
    "offscreen_time_composing_s",
    "lookback_time_s",
    "thinking_time_s",
]


def pointwise_phases(
    track: Track,
    modality: str,
    reviewing: tuple[float, float] | None,
    composing: tuple[float, float] | None,
    *,
    composing_open_start: bool = False,
) -> dict[str, float]:
    """Spec 3.4 for one modality given the phase intervals: reviewing [a, b] and composing [a, b).

    With `composing_open_start` composing is (a, b] instead: the default mode's composing phase follows
    the last read sample and runs to the end of the question's segment.
    """
    m = modality
    out = {f"{m}_{n}": 0.0 for n in POINTWISE_PHASE_NAMES}
    if reviewing is None or composing is None:
        return out
    t = track.t
    rev_rows = (t >= reviewing[0]) & (t <= reviewing[1])
    if composing_open_start:
        comp_rows = (t > composing[0]) & (t <= composing[1])
    else:
        comp_rows = (t >= composing[0]) & (t < composing[1])
    on = track.in_box
    valid = track.idx != -1
    rev = (reviewing[1] - reviewing[0]) / 1000
    comp = (composing[1] - composing[0]) / 1000
    whole = rev + comp
    rev_active = _share(on[rev_rows])
    rev_off = 1.0 - rev_active if rev_rows.any() else 0.0
    comp_active = _share(on[comp_rows])
    comp_off = 1.0 - comp_active if comp_rows.any() else 0.0
    lookback = _share(valid[comp_rows])
    thinking = _share((on & ~valid)[comp_rows])
    reached = track.idx[rev_rows & valid]
    values = {
        "reviewing_duration_s": rev,
        "composing_duration_s": comp,
        "reviewing_pct": rev / whole * 100 if whole > 0 else 0.0,
        "composing_pct": comp / whole * 100 if whole > 0 else 0.0,
        "detection_method": 1.0,
        "max_char_position_reached": float(reached.max()) if reached.size else -1.0,
        "reviewing_active_ratio": rev_active,
        "reviewing_offscreen_ratio": rev_off,
        "composing_active_ratio": comp_active,
        "composing_offscreen_ratio": comp_off,
        "composing_lookback_ratio": lookback,
        "composing_thinking_ratio": thinking,
        "reviewing_composing_duration_ratio": safe_ratio(rev, comp),
        "reviewing_composing_activity_ratio": safe_ratio(rev_active, comp_active),
        "composing_reviewing_activity_diff": comp_active - rev_active,
        "offscreen_increase": comp_off - rev_off,
        "active_time_reviewing_s": rev * rev_active,
        "active_time_composing_s": comp * comp_active,
        "offscreen_time_reviewing_s": rev * rev_off,
        "offscreen_time_composing_s": comp * comp_off,
        "lookback_time_s": comp * lookback,
        "thinking_time_s": comp * thinking,
    }
    return {f"{m}_{n}": v for n, v in values.items()}


def pointwise_cross(gaze: dict[str, float], mouse: dict[str, float]) -> dict[str, float]:
    """Spec 3.4 cross-modality ratios (gaze over mouse)."""
    return {
        "cross_modality_reviewing_duration_ratio_gaze_mouse": safe_ratio(
            gaze["gaze_reviewing_duration_s"], mouse["mouse_reviewing_duration_s"]
        ),
        "cross_modality_composing_duration_ratio_gaze_mouse": safe_ratio(
            gaze["gaze_composing_duration_s"], mouse["mouse_composing_duration_s"]
        ),
        "cross_modality_reviewing_activity_ratio_gaze_mouse": safe_ratio(
            gaze["gaze_reviewing_active_ratio"], mouse["mouse_reviewing_active_ratio"]
        ),
        "cross_modality_composing_activity_ratio_gaze_mouse": safe_ratio(
            gaze["gaze_composing_active_ratio"], mouse["mouse_composing_active_ratio"]
        ),
    }
