"""Default-mode features: one question's samples (a wire Session or an IFLLM segment) -> named floats.

Everything is computed per question, over one row set: the samples taken while that question's answers
were on screen (docs/features.md lists where and why this differs from the reference).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from feature_svc.features.formulas import (
    Track,
    counts,
    pairwise_cross,
    pairwise_phases,
    per_query,
    pointwise_cross,
    pointwise_phases,
)
from feature_svc.features.sets import FeatureSet
from tacit.ifllm.matching import CONTEXT
from tacit.ifllm.reader import Segment
from tacit.ifllm.tables import PLACEHOLDER
from tacit.schemas import Session, Stream

__all__ = ["Observation", "compute", "from_segment", "from_session", "select"]

SIDES = ("left", "right")
MODALITIES = ("gaze", "mouse")
_PREFIX = {"left": "response_A_", "right": "response_B_"}
_PLACEHOLDER_FLAT = PLACEHOLDER.replace("\n", " ")


@dataclass(frozen=True, slots=True)
class Observation:
    """One question as arrays: the feature core's input."""

    mode: str
    query_length: int
    lengths: dict[str, int]
    tracks: dict[tuple[str, str], Track]
    previous_length: int | None = None

    @property
    def samples(self) -> int:
        return sum(len(t) for t in self.tracks.values())

    def track(self, side: str, modality: str) -> Track:
        return self.tracks.get((side, modality)) or Track.empty()


def continuous_time(t: npt.NDArray[np.float64], reloads: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Page time made continuous across reloads: a new page load continues from the previous sample."""
    if reloads.size == 0:
        return t
    offsets = np.zeros(t.size, dtype=np.float64)
    for r in reloads.tolist():
        offsets[r:] += t[r - 1] + offsets[r - 1] - offsets[r]
    return t + offsets


def _placeholder_mask(
    windows: list[str], idx: npt.NDArray[np.int64], in_box: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """In-box samples whose window is the waiting placeholder text (guarded window test, spec 2.2)."""
    out = np.zeros(idx.size, dtype=np.bool_)
    cache: dict[tuple[str, int], bool] = {}
    anywhere: dict[str, bool] = {}
    for i in np.flatnonzero(in_box).tolist():
        w = windows[i]
        if not w:
            continue
        # Most windows are answer text that occurs nowhere in the placeholder: one lookup per window.
        found = anywhere.get(w)
        if found is None:
            found = anywhere[w] = w.replace("\n", " ") in _PLACEHOLDER_FLAT
        if not found:
            continue
        k = int(idx[i])
        key = (w, k)
        hit = cache.get(key)
        if hit is None:
            hit = w.replace("\n", " ") in _PLACEHOLDER_FLAT[max(0, k - CONTEXT) : k + CONTEXT]
            cache[key] = hit
        out[i] = hit
    return out


def _stream_track(stream: Stream) -> Track:
    x = np.asarray(stream.x, dtype=np.float64)
    y = np.asarray(stream.y, dtype=np.float64)
    idx = np.asarray(stream.char_index, dtype=np.int64)
    t = continuous_time(np.asarray(stream.t_page_ms, dtype=np.float64), np.asarray(stream.reload_at, dtype=np.int64))
    in_box = ~((x == -1) & (y == -1))
    placeholder = _placeholder_mask(stream.window, idx, in_box) if in_box.any() else np.zeros(x.size, np.bool_)
    head = np.asarray(stream.head_in_box, dtype=np.int8) if stream.head_in_box is not None else None
    # Character indices under the placeholder point into the placeholder, not into the answer.
    idx = np.where(placeholder, -1, idx)
    return Track(x=x, y=y, idx=idx, t=t, placeholder=placeholder, head=head)


def from_session(session: Session) -> Observation:
    """A validated wire Session -> Observation."""
    tracks = {}
    lengths = {}
    for side, response in zip(SIDES, session.responses, strict=False):
        lengths[side] = len(response.text)
        for modality in MODALITIES:
            stream = getattr(response, modality)
            if stream is not None:
                tracks[(side, modality)] = _stream_track(stream)
    return Observation(
        mode=session.mode,
        query_length=len(session.query),
        lengths=lengths,
        tracks=tracks,
        previous_length=None if session.previous_response is None else len(session.previous_response),
    )


def from_segment(segment: Segment) -> Observation:
    """An IFLLM question segment -> Observation, without building the wire Session."""
    rec = segment.recording
    tracks = {}
    for key, rel in rec.files.items():
        rows = segment.rows[key]
        t = rel.t[rows]
        reloads = np.flatnonzero(np.diff(t) < 0) + 1
        placeholder = segment.placeholder[key][rows]
        tracks[key] = Track(
            x=rel.x[rows],
            y=rel.y[rows],
            idx=np.where(placeholder, -1, rel.idx[rows]),
            t=continuous_time(t, reloads),
            placeholder=placeholder,
            head=rel.head[rows],
        )
    query = segment.query
    lengths = {"left": len(query.response_1)}
    if rec.mode == "pairwise":
        lengths["right"] = len(query.response_2 or "")
    previous = segment.previous
    return Observation(
        mode=rec.mode,
        query_length=len(query.query),
        lengths=lengths,
        tracks=tracks,
        previous_length=None if previous is None or rec.mode != "pointwise" else len(previous.response_1),
    )


def _camera(obs: Observation) -> dict[str, float]:
    # One flag per sampler tick (the left box's gaze stream); unknown flags count as neither.
    head = obs.track("left", "gaze").head
    if head is None or head.size == 0:
        return {"camera_green": 0.0, "camera_green_ratio": 0.0}
    green = float((head == 1).sum())
    known = float((head >= 0).sum())
    return {"camera_green": green, "camera_green_ratio": green / known if known else 0.0}


def compute(obs: Observation) -> dict[str, float]:
    """Every default-mode feature of one question, by name."""
    sides = SIDES if obs.mode == "pairwise" else ("left",)
    out: dict[str, float] = {"user_query_length": float(obs.query_length)}
    for side in sides:
        out[f"response_length_{side}"] = float(obs.lengths.get(side, 0))
    if obs.mode == "pointwise":
        out["prev_response_length_left"] = float(obs.previous_length or 0)
    for side in sides:
        length = obs.lengths.get(side, 0)
        for modality in MODALITIES:
            track = obs.track(side, modality)
            values = per_query(track, length, f"{_PREFIX[side]}{modality}_")
            del values[f"{_PREFIX[side]}{modality}_data_points"]  # = total_entries: same row set here
            out |= values
            out |= counts(track, length, modality, side)
    out |= _camera(obs)
    if obs.mode == "pairwise":
        per_modality = {}
        for modality in MODALITIES:
            left, right = obs.track("left", modality), obs.track("right", modality)
            per_modality[modality] = pairwise_phases(
                left, right, modality, lookback=(left.placeholder, right.placeholder)
            )
            out |= per_modality[modality]
        out |= pairwise_cross(per_modality["gaze"], per_modality["mouse"])
    else:
        per_modality = {}
        for modality in MODALITIES:
            track = obs.track("left", modality)
            valid = track.t[track.idx != -1]
            if valid.size:
                start, end, last_read = float(track.t.min()), float(track.t.max()), float(valid.max())
                phases = pointwise_phases(
                    track, modality, (start, last_read), (last_read, end), composing_open_start=True
                )
            else:
                phases = pointwise_phases(track, modality, None, None)
            per_modality[modality] = phases
            out |= phases
        out |= pointwise_cross(per_modality["gaze"], per_modality["mouse"])
    return out


def select(
    values: Mapping[str, float],
    feature_set: FeatureSet,
    mode: str,
    previous: Mapping[str, float] | None = None,
    *,
    first_turn: bool = False,
) -> tuple[list[str], npt.NDArray[np.float64]]:
    """Order `values` by the set's names; `prev_*` names come from the previous question's values.

    A conversation's first question has no previous answer (`first_turn`): its `prev_*` features are 0,
    the reference's value for "no samples". Raises KeyError naming the first feature that cannot be provided.
    """
    available = list(values)
    if mode == "pointwise":
        # Pointwise rows of a table carry every feature of the previous question under `prev_`.
        # (`prev_response_length_left` is both: the current session knows the previous answer's length.)
        available += [f"prev_{n}" for n in values if not n.startswith("prev_") and f"prev_{n}" not in values]
    names = feature_set.names(mode, available)
    out = np.empty(len(names), dtype=np.float64)
    for i, name in enumerate(names):
        if name in values:
            out[i] = values[name]
        elif name.startswith("prev_"):
            if previous is None:
                if not first_turn:
                    raise KeyError(f"{name} needs the previous question of the conversation")
                out[i] = 0.0
            else:
                out[i] = previous[name[len("prev_") :]]
        else:
            raise KeyError(f"{name} is not produced for {mode} questions")
    return names, out
